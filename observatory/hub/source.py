"""A hub repository as a run of the experiment: `register` writes its run directory (run.json,
hub.json, manifest.jsonl with one row per revision, the tokenizer, the probe items cut from
`hub.text`), so that discovery, the store, shards and the report see a run like any other;
`load` is how the sweep loads one of its checkpoints (a revision)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from observatory.hub import integrity
from observatory.hub import repo as hub
from observatory.hub.model import load_hooked, model_config
from observatory.hub.suites import checkpoint_revisions, suite_of
from train import rundir
from train.durable import atomic_write_bytes, write_json

HUB_JSON = "hub.json"
TOKENIZER_DIR = "tokenizer"
NGRAM_STREAM = "ngram_stream.safetensors"  # hub.text after the held-out documents, in blocks
APPLICABLE = ("attention", "weights", "loss", "essential_dynamics", "ngram", "llc")  # not our tasks' items
NEEDS_TEXT = ("loss", "essential_dynamics", "ngram", "llc")


def is_hub_run(run_dir: Path) -> bool:
    return (Path(run_dir) / HUB_JSON).exists()


def read_hub_json(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / HUB_JSON).read_text())


def applicable_probes(probe_cfgs: dict, has_text: bool) -> tuple[dict, dict[str, str]]:
    """The probes a hub run can take, and why each other one is left out (said once)."""
    if (probe_cfgs.get("llc") or {}).get("components"):
        raise ValueError("per-component LLCs name our GPT's heads and layers; a hub model takes the whole model's "
                         "LLC alone: set probes.llc.components=[] (and calibrate without component=)")
    kept, left_out = {}, {}
    for name, cfg in probe_cfgs.items():
        if name not in APPLICABLE:
            left_out[name] = ("its items are our synthetic tasks' tokens" if name in ("capability", "linear")
                              else "not made for hub checkpoints")
        elif name in NEEDS_TEXT and not has_text:
            left_out[name] = "it needs text: hub.text=<files or a hub dataset>"
        else:
            kept[name] = cfg
    return kept, left_out


def run_name(repo: str) -> str:
    return repo.split("/")[-1]


def register(experiment_dir: Path, repo: str, revisions: list[str] | None = None, every: int | None = None,
             text: str | None = None, tokenizer: str | None = None, n_ctx: int = 512, max_tokens: int = 8192,
             stream_tokens: int = 1_000_000, keep: bool = False) -> Path:
    """The repository's run directory under the experiment, its manifest listing the chosen
    revisions (each with the sha256 of its weight files, from the hub's metadata); written
    again on every call (new revisions on the hub join), never with other probe inputs. Offline,
    a registered run is kept as it is: the revisions probed and removed are no longer in the
    cache, and the manifest must not lose them."""
    run_dir = Path(experiment_dir) / run_name(repo)
    settings = {"repo": repo, "text": text, "tokenizer": tokenizer or repo, "n_ctx": n_ctx,
                "max_tokens": max_tokens, "stream_tokens": stream_tokens}
    _check_same_inputs(run_dir, settings)
    if hub.offline() and (run_dir / HUB_JSON).exists() and not (revisions or every):
        return run_dir
    heads = hub.branches(repo)
    checkpoints = choose_revisions(repo, revisions, every, list(heads))
    before = read_hub_json(run_dir) if (run_dir / HUB_JSON).exists() else {}
    weights = {rev: known_weights(before, rev, heads[rev]) or hub.weight_files(repo, rev) for rev in checkpoints}
    last = list(checkpoints)[-1]
    run_dir.mkdir(parents=True, exist_ok=True)
    hf_config, n_params, non_embedding = _shape(repo, last)
    tok = _save_tokenizer(run_dir, tokenizer or repo, None if tokenizer else last)
    cfg = model_config(hf_config, n_ctx)
    suite = suite_of(repo)
    per_step = suite.tokens_per_step or 1
    special, bos = set(tok.all_special_ids), _bos(tok, hf_config)
    ordinary = sorted(i for i in tok.get_vocab().values() if i not in special and i < cfg.vocab_size)
    write_json(run_dir / HUB_JSON, {**settings, "suite": suite.name, "keep": keep, "bos_token_id": bos,
                                    "ordinary_ids": ordinary,
                                    "revisions": {rev: weights[rev].files for rev in checkpoints},
                                    "commits": {rev: heads[rev] for rev in checkpoints}})
    if text and not (rundir.read_probe_items(run_dir) and (run_dir / NGRAM_STREAM).exists()):  # the same text: kept
        end_of_text = tok.eos_token_id if tok.eos_token_id is not None else bos
        write_text(run_dir, text, tok, max_tokens, stream_tokens, cfg.n_ctx, end_of_text)
    seed = re.search(r"-seed(\d+)$", repo)
    write_json(run_dir / rundir.RUN_JSON, {
        "experiment": Path(experiment_dir).name, "run": run_dir.name, "model": re.sub(r"-seed\d+$", "", run_name(repo)),
        "seed": int(seed.group(1)) if seed else 0, "n_params": n_params, "n_params_non_embedding": non_embedding,
        "model_config": asdict(cfg), "tokens_per_step": per_step, "max_steps": max(checkpoints.values()),
        "status": "completed", "source": f"hub:{repo}"})
    rows = [{"step": step, "tokens": step * per_step, "file": rev, "sha256": weights[rev].sha256}
            for rev, step in checkpoints.items()]
    atomic_write_bytes(run_dir / rundir.MANIFEST, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return run_dir


def write_text(run_dir: Path, text, tok, max_tokens: int, stream_tokens: int, n_ctx: int, separator: int) -> None:
    """probe_items.jsonl (the held-out documents) and the n-gram stream's blocks of n_ctx + 1
    tokens (the model never reads across its window), cut from `hub.text`."""
    import torch
    from safetensors.torch import save

    from observatory.hub.text import split_text  # datasets: only where there is text to read
    from train.text import document_item

    heldout, stream = split_text(text, tok, max_tokens, stream_tokens, separator)
    rundir.write_probe_items(run_dir, [document_item(ids) for ids in heldout])
    length = n_ctx + 1
    blocks = torch.tensor(stream[: len(stream) // length * length], dtype=torch.int64).reshape(-1, length)
    atomic_write_bytes(run_dir / NGRAM_STREAM, save({"blocks": blocks}))


def stream_blocks(run_dir: Path):
    """The n-gram stream's blocks (M, n_ctx + 1): what stands for a hub model's training stream."""
    from safetensors.torch import load_file

    path = Path(run_dir) / NGRAM_STREAM
    return load_file(path)["blocks"] if path.exists() else None


def known_weights(before: dict, revision: str, commit: str) -> hub.WeightFiles | None:
    """A revision's weight files as an earlier registration (its hub.json, `before`) read them,
    if its branch still points at the same commit: a re-run (each shard's, each follower
    poll's) then asks the hub for the branch list alone, not for every revision's metadata."""
    if before.get("commits", {}).get(revision) != commit or revision not in before.get("revisions", {}):
        return None
    return hub.WeightFiles(before["revisions"][revision])


def choose_revisions(repo: str, revisions: list[str] | None, every: int | None,
                     branches: list[str]) -> dict[str, int]:
    """{revision: step}: the given revisions, or every branch that names a step (every K-th
    of them with `every`, the last always kept)."""
    found = checkpoint_revisions(repo, branches)
    if not found:
        raise hub.HubError(f"hub.repo={repo}: no branch names a training step ({suite_of(repo).name}'s naming: "
                           f"{suite_of(repo).revision}); name them with hub.revisions=[...]")
    if revisions:
        unknown = [r for r in revisions if r not in found]
        if unknown:
            raise hub.HubError(f"hub.revisions: {unknown} are not checkpoint branches of {repo} "
                               f"(it has {', '.join(list(found)[:5])}, … {list(found)[-1]})")
        found = {r: s for r, s in found.items() if r in revisions}
    if every:
        names = list(found)
        found = {r: found[r] for i, r in enumerate(names) if i % every == 0 or i == len(names) - 1}
    return found


def _check_same_inputs(run_dir: Path, settings: dict) -> None:
    if not (run_dir / HUB_JSON).exists():
        return
    before = read_hub_json(run_dir)
    changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
    if changed:
        said = ", ".join(f"hub.{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items())
        raise hub.HubError(f"{run_dir} was registered with other probe inputs ({said}): its stored results would "
                           "mix them; use another experiment_name=")


def _shape(repo: str, revision: str):
    """(config, parameters, non-embedding parameters) without loading any weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(repo, revision=revision, cache_dir=hub.cache())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = model.get_output_embeddings()
    if output is not None:
        embeddings.add(id(output.weight))
    embedding = sum(p.numel() for p in model.parameters() if id(p) in embeddings)
    return config, n_params, n_params - embedding


def _save_tokenizer(run_dir: Path, source: str, revision: str | None):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, revision=revision, cache_dir=hub.cache())
    except (OSError, ValueError) as e:  # none there: transformers raises either, by what the folder lacks
        raise hub.HubError(f"no tokenizer in {source}{'@' + revision if revision else ''} ({e}); name the repository "
                           "that has it with hub.tokenizer=<repo> (delphi-suite: delphi-suite/stories-tokenizer)") from None
    folder = run_dir / TOKENIZER_DIR
    if not folder.exists():  # written once, whole: the shards of a sweep register at the same time
        staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=run_dir))
        tok.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another job put it there first: the same tokenizer (same settings)
            shutil.rmtree(staging)
    return tok


def _bos(tok, hf_config) -> int:
    for candidate in (tok.bos_token_id, getattr(hf_config, "bos_token_id", None), tok.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise hub.HubError("the tokenizer and the config name no beginning-of-sequence token (nor end of text)")


def load(run_dir: Path, revision: str, sha256: str, device: str = "cpu"):
    """One revision as a hooked model: its weight files downloaded (one revision at a time),
    checked against the sha256 the manifest recorded, removed again unless hub.keep=true or
    they were in the cache before."""
    info = read_hub_json(run_dir)
    weights = hub.WeightFiles(info["revisions"][revision])
    if weights.sha256 != sha256:
        raise hub.HubError(f"{info['repo']}@{revision}: its weight files are not the ones registered (sha256)")
    snapshot, cached = hub.download(info["repo"], revision, list(weights.files))
    try:
        hub.verify(snapshot, weights)
        model = load_hooked(snapshot, Path(run_dir) / TOKENIZER_DIR, info["n_ctx"], device)
        integrity.record(run_dir, revision, model)
        return model
    finally:
        if not (info["keep"] or cached):
            hub.remove(snapshot)
