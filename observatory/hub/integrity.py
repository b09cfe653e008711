"""Are a suite's revisions what their names say? Public suites have served the same weights
under many step names (Pythia issues #83, #195, #205) and another revision's file under a
step's name (#206). Before downloading, the hub's sha256 of each revision's weight files finds
byte-identical revisions; after loading, a fingerprint of the numbers finds numerically
identical ones, and a fixed sample of the weights finds a revision off the path that training
takes (farther from each of its neighbours than they are from each other)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import torch

from train.durable import write_json

FOLDER = "integrity"  # in the run directory: one <revision>.json per loaded revision
SAMPLE = 4096  # weights sampled at fixed positions: distances between revisions


def record(run_dir: Path, revision: str, model: torch.nn.Module) -> None:
    """What loading found: the sha256 of the parameters' float32 values (name order) and the
    same SAMPLE coordinates of every revision (seeded by the parameter count), read one
    parameter at a time (no second copy of a large model's weights)."""
    params = sorted(model.named_parameters(), key=lambda item: item[0])
    total = sum(p.numel() for _, p in params)
    positions = torch.randint(total, (SAMPLE,), generator=torch.Generator().manual_seed(total))
    digest, sample, start = hashlib.sha256(), torch.empty(SAMPLE), 0
    for name, param in params:
        values = param.detach().float().cpu().contiguous().flatten()
        digest.update(name.encode())
        digest.update(memoryview(values.numpy()))
        inside = (positions >= start) & (positions < start + len(values))
        sample[inside] = values[positions[inside] - start]
        start += len(values)
    (Path(run_dir) / FOLDER).mkdir(exist_ok=True)
    write_json(Path(run_dir) / FOLDER / f"{revision}.json", {"values_sha256": digest.hexdigest(), "sample": sample.tolist()})


def table(run_dir: Path, manifest: list[dict]) -> pd.DataFrame:
    """One row per revision in step order: revision, step, sha256 (its weight files), same_as
    (the earliest other revision with the same weights), warning (why it is suspect, or empty),
    loaded (whether the after-loading checks could run). Every revision of a group sharing
    weights is flagged: the files cannot tell which step the weights belong to (Pythia #205:
    the early branches hold the final model's)."""
    found = {}
    for row in manifest:
        path = Path(run_dir) / FOLDER / f"{row['file']}.json"
        found[row["file"]] = json.loads(path.read_text()) if path.exists() else None
    ordered = sorted(manifest, key=lambda r: r["step"])
    group, by_bytes, by_values = {}, {}, {}  # revision -> its group's first revision
    for row in ordered:
        revision, loaded = row["file"], found[row["file"]]
        values = loaded["values_sha256"] if loaded else None
        group[revision] = by_bytes.get(row["sha256"]) or by_values.get(values) or revision
        by_bytes.setdefault(row["sha256"], group[revision])
        if values:
            by_values.setdefault(values, group[revision])
    sha = {row["file"]: row["sha256"] for row in ordered}
    members: dict[str, list[str]] = {}  # a group's first revision -> its revisions, in step order
    for row in ordered:
        members.setdefault(group[row["file"]], []).append(row["file"])
    rows = []
    for row in ordered:
        revision = row["file"]
        others = [r for r in members[group[revision]] if r != revision]
        warning = ""
        if others:
            how = "byte-identical to" if any(sha[o] == sha[revision] for o in others) else \
                "numerically identical (other files) to"
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            warning = f"{how} {others[0]}{more}: which step these weights are cannot be told"
        rows.append({"revision": revision, "step": row["step"], "sha256": row["sha256"], "same_as": others[0] if others else "",
                     "warning": warning, "loaded": found[revision] is not None})
    out = pd.DataFrame(rows, columns=["revision", "step", "sha256", "same_as", "warning", "loaded"])
    for i, why in off_path(out, found).items():
        out.loc[i, "warning"] = why
    return out


def off_path(rows: pd.DataFrame, found: dict) -> dict[int, str]:
    """{row: why} for each revision (not one of a group sharing weights) farther from both its
    neighbours (the nearest such revisions before and after it) than they
    are from each other, on the sampled weights: training moves away from where it was, so the
    revision between two others lies between them, not off to the side."""
    kept = [i for i in rows.index if found[rows.loc[i, "revision"]] and not rows.loc[i, "same_as"]]
    samples = {i: torch.tensor(found[rows.loc[i, "revision"]]["sample"], dtype=torch.float64) for i in kept}
    out = {}
    for before, i, after in zip(kept, kept[1:], kept[2:]):
        neighbours = (samples[after] - samples[before]).norm()
        to_before, to_after = (samples[i] - samples[before]).norm(), (samples[i] - samples[after]).norm()
        if min(to_before, to_after) > neighbours:
            out[i] = (f"off the path from {rows.loc[before, 'revision']} to {rows.loc[after, 'revision']}: "
                      f"{to_before:.3g} and {to_after:.3g} from them, which are {neighbours:.3g} apart")
    return out
