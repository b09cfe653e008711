"""A hub repository's revisions and weight files: from the hub's API with a network, from the
local cache (laid out as huggingface_hub lays it out) with HF_HUB_OFFLINE=1. Only weight files
and config.json are downloaded, one revision at a time."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = ("model.safetensors", "model-", "pytorch_model.bin", "pytorch_model-")  # names or shard prefixes
CONFIG = "config.json"


class HubError(ValueError):
    """A repository or revision that cannot be read; the message names the fix."""


def asking(what: str, call):
    """`call()`, a request to the hub, with its failures as HubErrors that say what to do."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return call()
    except RepositoryNotFoundError:
        raise HubError(f"{what}: no such repository on the hub (or a private one: hf auth login)") from None
    except RevisionNotFoundError:
        raise HubError(f"{what}: no such revision in the repository") from None
    except Exception as e:  # the hub unreachable (httpx's errors are not OSErrors), or refusing the request
        raise HubError(f"{what}: the hub did not answer ({type(e).__name__}: {e}); check the network, or set "
                       "HF_HUB_OFFLINE=1 to read the revisions already in the hub cache") from None


def offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


def cache() -> Path:
    """The hub cache (HF_HUB_CACHE, or HF_HOME/hub), as huggingface_hub read it at import: every
    call here and into transformers names it, so that all of them use the same one."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> Path:
    """The repository's folder in the hub cache: <cache>/models--org--name."""
    return cache() / ("models--" + repo.replace("/", "--"))


def branches(repo: str) -> dict[str, str]:
    """The repository's branches and the commit each points at: the hub's list (one request),
    or offline the cache's refs/ (what was downloaded)."""
    if not offline():
        from huggingface_hub import HfApi

        refs = asking(f"hub.repo={repo}", lambda: HfApi().list_repo_refs(repo).branches)
        return {b.name: b.target_commit for b in refs}
    refs = repo_folder(repo) / "refs"
    if not refs.is_dir():
        raise HubError(f"hub.repo={repo}: not in the hub cache {refs.parent.parent} and HF_HUB_OFFLINE=1: download it "
                       "with a network first, or unset HF_HUB_OFFLINE")
    return {p.name: p.read_text().strip() for p in sorted(refs.iterdir()) if p.is_file()}  # refs/pr/N: not branches


@dataclass(frozen=True)
class WeightFiles:
    """One revision's weight files {name: sha256 of its bytes}, and their digest: the file's
    sha256 when there is one file, else the sha256 of the sorted "name sha256" lines."""

    files: dict[str, str]

    @property
    def sha256(self) -> str:
        if len(self.files) == 1:
            return next(iter(self.files.values()))
        lines = "".join(f"{name} {digest}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()


def choose_weights(names: list[str]) -> list[str]:
    """Safetensors where the revision has them, else PyTorch's .bin (Pythia's older uploads)."""
    weights = [n for n in names if "/" not in n and n.startswith(WEIGHTS)]
    safetensors = [n for n in weights if n.endswith(".safetensors")]
    return sorted(safetensors or [n for n in weights if n.endswith(".bin")])


def weight_files(repo: str, revision: str) -> WeightFiles:
    """The revision's weight files and their sha256, without downloading them: the hub's LFS
    metadata, or offline the cache's blob names (an LFS file's blob is named by its sha256)."""
    if offline():
        snapshot = snapshot_folder(repo, revision)
        names = choose_weights([p.name for p in snapshot.iterdir()])
        found = {n: Path(os.readlink(snapshot / n)).name for n in names if (snapshot / n).is_symlink()}
    else:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        listed = asking(f"{repo}@{revision}", lambda: {f.path: f for f in HfApi().list_repo_tree(repo, revision=revision)
                                                        if isinstance(f, RepoFile)})
        names = choose_weights(list(listed))
        found = {n: listed[n].lfs.sha256 for n in names if listed[n].lfs}
    if not names or len(found) != len(names):
        raise HubError(f"{repo}@{revision}: no weight files ({', '.join(WEIGHTS)}*) with an sha256 in this revision")
    return WeightFiles(found)


def cached_snapshot(repo: str, revision: str) -> Path | None:
    """The revision's folder in the hub cache (refs/<revision> names its commit), or None."""
    ref = repo_folder(repo) / "refs" / revision
    return repo_folder(repo) / "snapshots" / ref.read_text() if ref.is_file() else None


def snapshot_folder(repo: str, revision: str) -> Path:
    snapshot = cached_snapshot(repo, revision)
    if snapshot is None:
        raise HubError(f"{repo}@{revision} is not in the hub cache {repo_folder(repo)} and HF_HUB_OFFLINE=1")
    return snapshot


def download(repo: str, revision: str, files: list[str]) -> tuple[Path, bool]:
    """The revision's folder with `files` and config.json in it, and whether any of the
    revision was in the cache before (then none of it is ours to remove: another file of it, a
    branch naming the same commit)."""
    from huggingface_hub import snapshot_download

    wanted = [*files, *index_of(files), CONFIG]
    before = cached_snapshot(repo, revision)
    cached = before is not None and before.exists()
    folder = asking(f"{repo}@{revision}", lambda: snapshot_download(repo, revision=revision, allow_patterns=wanted,
                                                                   cache_dir=cache()))
    return Path(folder), cached


def index_of(files: list[str]) -> list[str]:
    """The index that a sharded checkpoint's loader reads beside its shards (model-00001-of-00003...)."""
    shards = [f for f in files if "-of-" in f]
    if not shards:
        return []
    return ["model.safetensors.index.json" if shards[0].endswith(".safetensors") else "pytorch_model.bin.index.json"]


def remove(snapshot: Path) -> None:
    """Delete a downloaded revision from the cache (blobs another revision shares are kept)."""
    from huggingface_hub import scan_cache_dir

    scan_cache_dir(snapshot.parent.parent.parent).delete_revisions(snapshot.name).execute()


def verify(snapshot: Path, weights: WeightFiles) -> None:
    """Each file's bytes against the sha256 the hub published for it (as our own checkpoints
    are checked against their manifest)."""
    for name, expected in weights.files.items():
        digest = hashlib.sha256()
        with open(snapshot / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise HubError(f"{snapshot / name}: sha256 {digest.hexdigest()[:12]}… but the hub published "
                           f"{expected[:12]}…: a corrupt download; delete it from the cache and run again")
