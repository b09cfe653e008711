"""The W&B runs of both stages, in one place: their ids and init settings, the one step axis,
and what an earlier process of the same run already logged, so that a resumed training run or a
re-run observatory logs no step twice. No torch and no Lightning here: the observatory imports it.

Every row is logged at the optimizer step it describes (as the manifest counts it: step 0 = the
initial weights), both as W&B's own `_step` and as `train/step`, the x-axis that every key of
every run is defined against, so that training losses and probe curves of one model share it.

wandb ships no reader for its offline run files (`<dir>/wandb/offline-run-*/run-<id>.wandb`):
they are LevelDB-log framed, a 7-byte file header (`:W&B`, magic 0xBEE1, version), then 32 KiB
blocks of chunks, each with a 7-byte header (crc32, little-endian length, type: 1 full, 2 first,
3 middle, 4 last); each reassembled payload is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = "observatory"
STEP = "train/step"
INTERRUPTED = 130  # the shell's exit status after Ctrl-C (128 + SIGINT)
BLOCK, HEADER = 32 * 1024, 7


def run_id(experiment: str, stage: str, run: str | None = None) -> str:
    """Stable, so that a resumed run continues its W&B run and a re-run updates its own:
    `<experiment>-<run>-<stage>` (quickstart-13k-s0-train), `<experiment>-<stage>` for a run of
    the whole experiment (quickstart-summary)."""
    return "-".join(part for part in (experiment, run, stage) if part)


def init_kwargs(experiment: str, stage: str, save_dir: Path | str, mode: str, run: str | None = None) -> dict:
    """wandb.init's arguments for a run of `stage` (job type) in the experiment's group."""
    import wandb

    return {"project": PROJECT, "group": experiment, "job_type": stage, "name": run or stage,
            "id": run_id(experiment, stage, run), "dir": str(save_dir), "mode": mode, "resume": "allow",
            # W&B's banners are a dozen lines per run; errors still raise. Its capture of the
            # console into the run's output.log stays as it is.
            "settings": wandb.Settings(silent=True)}


def exit_code(error: BaseException | None) -> int:
    """What W&B records for a run that ends with `error` (None: finished): 0, 130 after Ctrl-C
    (Lightning turns it into SystemExit(1), keeping the KeyboardInterrupt as its context), the
    code of a SystemExit that carries one (a preemption: 128 + signal), else 1. Non-zero marks
    the run failed, not finished."""
    if error is None:
        return 0
    if isinstance(error, KeyboardInterrupt) or isinstance(error.__context__, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, SystemExit) and isinstance(error.code, int) and error.code:
        return error.code
    return 1


class StepRun:
    """A W&B run whose rows go to the optimizer step they describe, on the train/step axis, and
    that skips each key at the steps its earlier processes already logged: from this run id's
    offline files under the same directory, or (online) from the server's last step."""

    open_runs = 0  # in this process: wandb's service is torn down after the last one finishes

    def __init__(self, kwargs: dict):
        import wandb

        floors = last_logged_steps(kwargs["dir"], kwargs["id"])  # before init: the new file is empty
        self.run = wandb.init(**kwargs, reinit="create_new")  # a follower keeps one open per training run
        StepRun.open_runs += 1
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)
        self.floors, self.floor = floors, self.run.starting_step - 1  # starting_step: 0 unless resumed online

    def log(self, metrics: dict, step: int) -> None:
        new = {key: value for key, value in metrics.items() if step > self.floors.get(key, self.floor)}
        if new:
            self.run.log({**new, STEP: step}, step=step)
            self.floors |= dict.fromkeys(new, step)  # W&B's step only grows: never a row behind this one

    def finish(self, exit_code: int = 0) -> None:
        import wandb

        self.run.finish(exit_code=exit_code)
        StepRun.open_runs -= 1
        # finish() can return before wandb's service has written the last records of the offline
        # file (seen as a truncated file read back at once); teardown waits for the service to exit
        if not StepRun.open_runs:
            wandb.teardown()


@contextmanager
def started(experiment: str, stage: str, save_dir: Path, mode: str, run: str | None = None) -> Iterator[StepRun]:
    """A StepRun of a stage that logs its whole history each time (the observatory's): its
    earlier offline files not yet uploaded are removed first, so a re-run updates the run
    rather than adding a copy; finished on leaving with exit_code() of what ended it."""
    kwargs = init_kwargs(experiment, stage, save_dir, mode, run)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if mode == "offline":
        for path in run_files(save_dir, kwargs["id"]):
            if not path.with_suffix(".wandb.synced").exists():  # `wandb sync` leaves that marker
                shutil.rmtree(path.parent)
    with continued(experiment, stage, save_dir, mode, run) as step_run:
        yield step_run


@contextmanager
def continued(experiment: str, stage: str, save_dir: Path, mode: str, run: str | None = None) -> Iterator[StepRun]:
    """A StepRun that continues what earlier processes of the run logged (their steps are
    skipped); finished on leaving with exit_code() of what ended it."""
    kwargs = init_kwargs(experiment, stage, save_dir, mode, run)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    step_run = StepRun(kwargs)
    try:
        yield step_run
    except BaseException as e:
        step_run.finish(exit_code(e))
        raise
    step_run.finish(0)


# ---- the offline run files -----------------------------------------------------------------
def run_files(root: Path | str, run_id: str | None = None) -> list[Path]:
    """The offline run files under `root` (any depth), of one run id or of all, oldest first."""
    name = f"offline-run-*-{run_id}/run-{run_id}.wandb" if run_id else "offline-run-*/run-*.wandb"
    return sorted(Path(root).glob(f"**/{name}"))


def records(path: Path):
    """The records of an offline run file, in order; a torn tail (a killed writer) ends them."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if (kind == 0 and length == 0) or pos + HEADER + length > len(data):
            return
        parts.append(data[pos + HEADER : pos + HEADER + length])
        pos += HEADER + length
        if kind in (1, 4):  # full or last chunk: one record complete
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(b"".join(parts))
            except DecodeError:
                return
            parts = []
            yield record


def history(path: Path) -> list[dict]:
    """The history rows of an offline run file: key -> value, with W&B's `_step`."""
    return [{(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            for record in records(path) if record.WhichOneof("record_type") == "history"]


def recorded_exit_code(path: Path) -> int | None:
    """The exit code a run file records (None: the process died before finishing its run)."""
    codes = [r.exit.exit_code for r in records(path) if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def last_logged_steps(root: Path | str, run_id: str) -> dict[str, int]:
    """key -> the last step at which any offline file of `run_id` under `root` logged it."""
    last: dict[str, int] = {}
    for path in run_files(root, run_id):
        for row in history(path):
            for key in row.keys() - {"_step", "_runtime", "_timestamp"}:
                last[key] = max(last.get(key, -1), row["_step"])
    return last
