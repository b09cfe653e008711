"""The run directory: the contract between training and the observatory.

    <checkpoints_dir>/<experiment>/<model>-s<seed>/
        run.json                       resolved config, sizes, versions, status
        manifest.jsonl                 one row per durable checkpoint
        step_00000128.safetensors      weights only, with the model config in its metadata
        resume/last.ckpt               full training state for exact resume
        tokenizer.json                 the vocabulary training saw
        probe_items.jsonl              held-out items: task, prompt/answer ids, metadata
    <checkpoints_dir>/<experiment>/.training.lock   held while a training process of it is alive

Both stages import this module (never copy it); it depends on torch, safetensors, the
model definition and train/durable.py only, not on Lightning.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from train.durable import atomic_write_bytes, write_json
from train.model import GPT
from train.model_config import GPTConfig

RUN_JSON = "run.json"
MANIFEST = "manifest.jsonl"
TOKENIZER = "tokenizer.json"
PROBE_ITEMS = "probe_items.jsonl"
RESUME_STATE = Path("resume") / "last.ckpt"
FORMAT = "observatory-weights/1"
METADATA_KEY = "observatory"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not match its manifest row."""


# ---- training under way ---------------------------------------------------------------
TRAINING_LOCK = ".training.lock"
ENDED = ("completed", "failed")  # a status that no process will change again (failed: <reason>)


def hold_training_lock(experiment_dir: Path):
    """Mark the experiment as being trained for as long as the returned file stays open (a
    training job, or the launcher of a sweep between its jobs): a shared lock, held by any
    number of processes and let go by the kernel whenever one ends, however it ends."""
    path = Path(experiment_dir) / TRAINING_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_SH)
    return f


@contextmanager
def training_lock(experiment_dir: Path):
    f = hold_training_lock(experiment_dir)
    try:
        yield
    finally:
        f.close()


def training_under_way(experiment_dir: Path) -> bool:
    """Whether a process on this machine holds the experiment's training lock now."""
    path = Path(experiment_dir) / TRAINING_LOCK
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def has_ended(status: str) -> bool:
    return status.startswith(ENDED)


def weights_file(step: int) -> str:
    return f"step_{step:08d}.safetensors"


# ---- run.json -----------------------------------------------------------------------
def read_run_json(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / RUN_JSON).read_text())


def block_length(info: dict) -> int:
    """Tokens per training block of a run (its run.json): data.seq_len + 1, the model reading
    the first seq_len; n_ctx + 1 for a run.json without the data config."""
    seq_len = info.get("config", {}).get("data", {}).get("seq_len")
    return int(seq_len if seq_len is not None else info["model_config"]["n_ctx"]) + 1


def update_status(run_dir: Path, status: str) -> None:
    info = read_run_json(run_dir)
    info["status"] = status
    write_json(Path(run_dir) / RUN_JSON, info)


# ---- manifest.jsonl -----------------------------------------------------------------
def read_manifest(run_dir: Path) -> list[dict]:
    """Rows in file order. A torn last line (a crash mid-append) is not a row."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        rows.append(json.loads(line))
    return rows


def repair_manifest(run_dir: Path) -> None:
    """Drop a torn last line so that the next append starts on a fresh line."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def append_manifest(run_dir: Path, row: dict) -> None:
    """Append one row and fsync; call only after the file the row names is durable."""
    with open(Path(run_dir) / MANIFEST, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- probe items --------------------------------------------------------------------
def write_probe_items(run_dir: Path, items: list[dict]) -> None:
    atomic_write_bytes(Path(run_dir) / PROBE_ITEMS, "".join(json.dumps(item) + "\n" for item in items).encode())


def read_probe_items(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / PROBE_ITEMS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---- weights ------------------------------------------------------------------------
def save_weights(path: Path, model: GPT, step: int) -> str:
    """Write weights-only safetensors (atomically) and return their sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tied_embeddings:
        del state["lm_head.weight"]  # the same tensor as wte.weight; safetensors stores it once
    # One metadata key: safetensors writes a multi-key map in a random order, and the same
    # weights must give the same bytes (and sha256) in every process.
    header = {"format": FORMAT, "step": step, "model_config": model.cfg.to_dict()}
    data = safetensors_save(state, metadata={METADATA_KEY: json.dumps(header, sort_keys=True)})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _read_metadata(data: bytes) -> dict:
    """Our header inside the safetensors one (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise CheckpointError("file is shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"unreadable safetensors header ({e})") from None
    try:
        return json.loads(header["__metadata__"][METADATA_KEY])
    except (KeyError, TypeError, ValueError):
        return {}


def load_weights_file(path: Path, expected_sha256: str | None = None) -> GPT:
    """Rebuild a model from one weights file alone. Never unpickles anything."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    data = path.read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise CheckpointError(f"{path.name}: sha256 {actual[:12]}… does not match the manifest's {expected_sha256[:12]}…")
    metadata = _read_metadata(data)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not an observatory weights file (format {metadata.get('format')!r})")
    try:
        state = safetensors_load(data)
    except Exception as e:  # safetensors raises its own error type for truncated files
        raise CheckpointError(f"{path.name}: corrupt safetensors ({e})") from None
    model = GPT(GPTConfig(**metadata["model_config"]))
    if model.cfg.tied_embeddings:
        state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model(run_dir: Path, step: int, verify: bool = True) -> GPT:
    """The model of `run_dir` at `step`, checked against its manifest row's sha256."""
    run_dir = Path(run_dir)
    rows = {row["step"]: row for row in read_manifest(run_dir)}
    if step not in rows:
        raise CheckpointError(f"{run_dir}: no checkpoint for step {step} in {MANIFEST} (have {sorted(rows)})")
    row = rows[step]
    return load_weights_file(run_dir / row["file"], row["sha256"] if verify else None)


def load_resume_state(path: Path) -> dict:
    """Full training state, read by torch's weights-only loader: tensors and plain containers,
    never arbitrary objects (a planted pickle is refused, not run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a resume state this project wrote ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]}); delete it to restart the run from step 0") from None
