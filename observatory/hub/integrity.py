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
    same SAMPLE coordinates of every revision (seeded by the parameter count)."""
    digest = hashlib.sha256()
    flat = []
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        values = param.detach().float().cpu().contiguous()
        digest.update(name.encode() + values.numpy().tobytes())
        flat.append(values.flatten())
    weights = torch.cat(flat)
    positions = torch.randint(len(weights), (SAMPLE,), generator=torch.Generator().manual_seed(len(weights)))
    (Path(run_dir) / FOLDER).mkdir(exist_ok=True)
    write_json(Path(run_dir) / FOLDER / f"{revision}.json",
               {"values_sha256": digest.hexdigest(), "sample": weights[positions].tolist()})


def table(run_dir: Path, manifest: list[dict]) -> pd.DataFrame:
    """One row per revision in step order: revision, step, sha256 (its weight files), same_as
    (the earliest earlier revision with the same weights), warning (why it is suspect, or
    empty), loaded (whether the after-loading checks could run)."""
    found = {}
    for row in manifest:
        path = Path(run_dir) / FOLDER / f"{row['file']}.json"
        found[row["file"]] = json.loads(path.read_text()) if path.exists() else None
    rows, first_bytes, first_values = [], {}, {}
    for row in sorted(manifest, key=lambda r: r["step"]):
        revision, loaded = row["file"], found[row["file"]]
        same_as, warning = first_bytes.get(row["sha256"]), ""
        if same_as:
            warning = f"byte-identical to {same_as}"
        elif loaded and loaded["values_sha256"] in first_values:
            same_as = first_values[loaded["values_sha256"]]
            warning = f"numerically identical to {same_as} (other files)"
        first_bytes.setdefault(row["sha256"], revision)
        if loaded:
            first_values.setdefault(loaded["values_sha256"], revision)
        rows.append({"revision": revision, "step": row["step"], "sha256": row["sha256"], "same_as": same_as or "",
                     "warning": warning, "loaded": loaded is not None})
    out = pd.DataFrame(rows, columns=["revision", "step", "sha256", "same_as", "warning", "loaded"])
    for i, why in off_path(out, found).items():
        out.loc[i, "warning"] = "; ".join(w for w in (out.loc[i, "warning"], why) if w)
    return out


def off_path(rows: pd.DataFrame, found: dict) -> dict[int, str]:
    """{row: why} for each revision (not a duplicate) farther from both its neighbours than they
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
