"""The results store: one Parquet file per run × checkpoint (written atomically, so a killed
sweep loses at most the checkpoint in flight), consolidated into one tidy table with one
row per run × step × probe × metric."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from train.rundir import atomic_write_bytes

COLUMNS = ["experiment", "run", "model", "seed", "n_params", "n_params_non_embedding", "step", "tokens", "flops",
           "probe", "metric", "value", "checkpoint_sha256", "probe_hash"]


def output_dir(experiment_dir: Path) -> Path:
    return Path(experiment_dir) / "observatory"


def checkpoint_file(experiment_dir: Path, run: str, step: int) -> Path:
    return output_dir(experiment_dir) / "checkpoints" / run / f"step_{step:08d}.parquet"


def write_parquet(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint_rows(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=COLUMNS)


def done_probes(rows: pd.DataFrame, sha256: str, hashes: dict[str, str]) -> set[str]:
    """Probes whose stored rows were computed from this exact file with this exact config."""
    current = rows[rows["checkpoint_sha256"] == sha256]
    return {name for name, h in hashes.items() if ((current["probe"] == name) & (current["probe_hash"] == h)).any()}


def consolidate(experiment_dir: Path, keep: set[tuple[str, int, str]]) -> pd.DataFrame:
    """All per-checkpoint files whose (run, step, sha256) is still in a manifest -> results.parquet."""
    files = sorted((output_dir(experiment_dir) / "checkpoints").glob("*/step_*.parquet"))
    tables = [t for t in (pd.read_parquet(f) for f in files) if len(t)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    mask = [(r, s, h) in keep for r, s, h in zip(table["run"], table["step"], table["checkpoint_sha256"])]
    table = table[mask].sort_values(["run", "step", "probe", "metric"], ignore_index=True)
    write_parquet(output_dir(experiment_dir) / "results.parquet", table)
    return table
