"""The results store: one Parquet file per run × checkpoint (written atomically, so a killed
sweep loses at most the checkpoint in flight), consolidated into one tidy table with one
row per run × step × probe × metric. Metrics that are means over probe items keep their
per-item scores beside it (items/ -> item_results.parquet) for the item bootstrap."""

from __future__ import annotations

import fcntl
import io
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from observatory.metrics import IDENTITY_COLUMNS, SPEC_COLUMNS
from train.durable import atomic_write, atomic_write_bytes

COLUMNS = ["experiment", "run", "model", "seed", "n_params", "n_params_non_embedding", "step", "tokens", "flops_6nd",
           "probe", "metric", "value", *SPEC_COLUMNS, *IDENTITY_COLUMNS, "checkpoint_sha256", "probe_hash"]
ITEM_COLUMNS = ["run", "step", "probe", "metric", "item", "value", "weight", "checkpoint_sha256", "probe_hash"]
TABLES = {"checkpoints": ("results.parquet", COLUMNS), "items": ("item_results.parquet", ITEM_COLUMNS)}
RENAMED = {"flops": "flops_6nd"}  # columns of files written before the rename


def flops_6nd(n_params_non_embedding: int, tokens: float) -> float:
    """Training compute C = 6·N·D (Kaplan et al. 2020), N non-embedding parameters, D tokens.
    Not the FLOPs behind MFU (GPT.palm_flops_per_token), which also count attention."""
    return 6.0 * n_params_non_embedding * tokens


class Checkpoint(Protocol):
    """What the store keys a checkpoint's results by, wherever the checkpoint comes from."""

    run: str
    step: int
    tokens: int
    sha256: str


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """The results columns with their types fixed (an unbounded metric's range is NaN, not a
    column of None that Parquet would type as null; a metric of the whole model has no layer)."""
    return table.astype({"value": float, "low": float, "high": float, "chance": float, "stderr": float,
                         "higher_is_better": bool, "layer": "Int64", "head": "Int64", "sample": "Int64", "primary": bool,
                         "task": "string", "split": "string", "role": "string", "label": "string", "unit": "string"})


def experiment_dir(cfg) -> Path:
    """Where a config's experiment lives: <checkpoints_dir>/<experiment_name>, as training writes it."""
    return Path(cfg.checkpoints_dir) / cfg.experiment_name


def output_dir(experiment_dir: Path) -> Path:
    return Path(experiment_dir) / "observatory"


def checkpoint_file(experiment_dir: Path, run: str, step: int, table: str = "checkpoints") -> Path:
    """Where one checkpoint's rows of `table` ("checkpoints": metrics, "items": per-item scores) live."""
    return output_dir(experiment_dir) / table / run / f"step_{step:08d}.parquet"


def checkpoint_files(experiment_dir: Path, table: str = "checkpoints") -> list[Path]:
    """Every stored checkpoint file of `table`, by run, then step (whichever job wrote it)."""
    return sorted((output_dir(experiment_dir) / table).glob("*/step_*.parquet"))


class StoreBusy(RuntimeError):
    """Another sweep is writing this experiment's store."""


@contextmanager
def exclusive(experiment_dir: Path):
    """One writer per store: a second sweep of the same experiment (another terminal, another
    job of a multirun) stops at once instead of interleaving its writes. The lock is the
    kernel's, so a killed sweep never leaves it held."""
    with _locked(output_dir(experiment_dir) / ".lock", fcntl.LOCK_EX, "another sweep", "wait for it to finish"):
        yield


@contextmanager
def shard_lock(experiment_dir: Path, shard: int):
    """A shard of a sharded sweep: shards share the store (each writes only its own
    checkpoints' files), a one-process sweep waits for all of them, and the same shard never
    runs twice at once."""
    out = output_dir(experiment_dir)
    with _locked(out / ".lock", fcntl.LOCK_SH, "a one-process sweep", "wait for it to finish"), \
            _locked(out / f".lock-shard-{shard}", fcntl.LOCK_EX, f"shard {shard}", "leave it to that job"):
        yield


@contextmanager
def _locked(path: Path, mode: int, holder: str, fix: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise StoreBusy(f"{holder} (pid {f.read().strip() or '?'}) is writing {path.parent}; {fix}, "
                            "then run again") from None
        if mode == fcntl.LOCK_EX:  # a shared lock's file would hold many pids: it names none
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
        try:
            yield
        finally:
            if mode == fcntl.LOCK_EX:
                f.truncate(0)  # a pid left behind would name the next holder wrongly


def write_parquet(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(experiment_dir: Path, ckpt: Checkpoint, table: str = "checkpoints") -> pd.DataFrame:
    """One checkpoint's stored rows of `table` (none yet: an empty table)."""
    path = checkpoint_file(experiment_dir, ckpt.run, ckpt.step, table)
    return pd.read_parquet(path).rename(columns=RENAMED) if path.exists() else pd.DataFrame(columns=TABLES[table][1])


def write_checkpoint(experiment_dir: Path, ckpt: Checkpoint, info: dict, metrics: dict, item_scores: dict,
                     hashes: dict[str, str], stored: pd.DataFrame, redone: list[str]) -> pd.DataFrame:
    """Write one checkpoint's new results beside what is kept of its stored ones (the rows of
    the probes not redone); returns its rows. The per-item scores go first: the metrics file
    is what marks the checkpoint as done."""
    items = _merge(read_checkpoint(experiment_dir, ckpt, "items"), _item_rows(ckpt, item_scores, hashes), redone,
                   ckpt.sha256)
    write_parquet(checkpoint_file(experiment_dir, ckpt.run, ckpt.step, "items"), items)
    table = _merge(stored, _metric_rows(ckpt, info, metrics, hashes), redone, ckpt.sha256)
    write_parquet(checkpoint_file(experiment_dir, ckpt.run, ckpt.step), table)
    return table


def _metric_rows(ckpt: Checkpoint, info: dict, metrics: dict[str, dict], hashes: dict[str, str]) -> pd.DataFrame:
    """One row per probe × metric: {probe: {name: observatory.metrics.Metric}}."""
    n = info["n_params_non_embedding"]
    base = {"experiment": info["experiment"], "run": ckpt.run, "model": info["model"], "seed": info["seed"],
            "n_params": info["n_params"], "n_params_non_embedding": n, "step": ckpt.step, "tokens": ckpt.tokens,
            "flops_6nd": flops_6nd(n, ckpt.tokens), "checkpoint_sha256": ckpt.sha256}
    rows = [base | {"probe": probe, "metric": name, **asdict(metric), "probe_hash": hashes[probe]}
            for probe, by_name in metrics.items() for name, metric in by_name.items()]
    return typed(pd.DataFrame(rows, columns=COLUMNS))


def _item_rows(ckpt: Checkpoint, item_scores: dict[str, dict], hashes: dict[str, str]) -> pd.DataFrame:
    """One row per probe × metric × item: {probe: {metric: ItemScores}}."""
    columns = {c: [] for c in ITEM_COLUMNS}
    for probe, scores in item_scores.items():
        for metric, s in scores.items():
            n = len(s.items)
            for name, value in (("run", ckpt.run), ("step", ckpt.step), ("probe", probe), ("metric", metric),
                                ("checkpoint_sha256", ckpt.sha256), ("probe_hash", hashes[probe])):
                columns[name] += [value] * n
            columns["item"] += s.items
            columns["value"] += s.values
            columns["weight"] += s.weights
    return pd.DataFrame(columns)


def _merge(stored: pd.DataFrame, new: pd.DataFrame, redone: list[str], sha256: str) -> pd.DataFrame:
    """Stored rows of the probes not redone (and of this very file), plus the new rows."""
    stale = stored["probe"].isin(redone) | (stored["checkpoint_sha256"] != sha256)
    parts = [t for t in (stored[~stale], new) if len(t)]
    return pd.concat(parts, ignore_index=True) if parts else new


def done_probes(rows: pd.DataFrame, sha256: str, hashes: dict[str, str]) -> set[str]:
    """Probes whose stored rows were computed from this exact file with this exact config."""
    current = rows[rows["checkpoint_sha256"] == sha256]
    return {name for name, h in hashes.items() if ((current["probe"] == name) & (current["probe_hash"] == h)).any()}


def consolidate(experiment_dir: Path, keep: set[tuple[str, int, str]], table: str = "checkpoints") -> Path:
    """All per-checkpoint files of `table` whose (run, step, sha256) is still in a manifest
    -> results.parquet (or item_results.parquet), sorted by run, step, probe, metric (and item).
    Streamed one file at a time, so memory stays flat in the number of checkpoints."""
    name, columns = TABLES[table]
    path = output_dir(experiment_dir) / name
    files = checkpoint_files(experiment_dir, table)
    with atomic_write(path) as f:
        writer = None
        for file in files:
            rows = pd.read_parquet(file).rename(columns=RENAMED)
            rows = rows[[(r, s, h) in keep for r, s, h in zip(rows["run"], rows["step"], rows["checkpoint_sha256"])]]
            if not len(rows):
                continue
            rows = rows.reindex(columns=columns)  # a file written before a column existed
            rows = rows.sort_values([c for c in ("probe", "metric", "item") if c in columns], ignore_index=True)
            arrow = pa.Table.from_pandas(rows[columns], schema=writer.schema if writer else None, preserve_index=False)
            writer = writer or pq.ParquetWriter(f, arrow.schema)
            writer.write_table(arrow)
        if writer:
            writer.close()
        else:
            pd.DataFrame(columns=columns).to_parquet(f, index=False)
    return path


def read_item_results(experiment_dir: Path, run: str, probe: str | None = None) -> pd.DataFrame | None:
    """One run's per-item scores (step, probe, metric, item, value, weight), or None before
    any: the whole table grows with runs × checkpoints × items, so readers take a run at a
    time (and, with `probe`, that probe's rows alone). Each checkpoint is a row group of its
    own, so the other runs' are skipped unread."""
    path = output_dir(experiment_dir) / TABLES["items"][0]
    if not path.exists():
        return None
    filters = [("run", "==", run)] + ([("probe", "==", probe)] if probe else [])
    return pd.read_parquet(path, columns=["step", "probe", "metric", "item", "value", "weight"],
                           filters=filters, read_dictionary=["probe", "metric"])


# ---- revisions' integrity (hub runs: observatory/hub/integrity.py) -------------------------
INTEGRITY = "integrity.csv"
INTEGRITY_COLUMNS = ["run", "revision", "step", "sha256", "same_as", "warning", "loaded"]


def write_integrity(experiment_dir: Path, table: pd.DataFrame) -> None:
    atomic_write_bytes(output_dir(experiment_dir) / INTEGRITY, table[INTEGRITY_COLUMNS].to_csv(index=False).encode())


def read_integrity(experiment_dir: Path) -> pd.DataFrame:
    """Every hub run's revisions with what the checks found (empty for an experiment of our own runs)."""
    path = output_dir(experiment_dir) / INTEGRITY
    if not path.exists():
        return pd.DataFrame(columns=INTEGRITY_COLUMNS)
    return pd.read_csv(path, keep_default_na=False, dtype={"same_as": str, "warning": str, "revision": str})


def suspect_checkpoints(integrity: pd.DataFrame) -> set[tuple[str, int]]:
    """(run, step) of the revisions whose weights are another's or off training's path: left
    out of onsets, drawn as marked points."""
    flagged = integrity[integrity["warning"] != ""]
    return set(zip(flagged["run"], flagged["step"].astype(int)))
