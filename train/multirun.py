"""What running many jobs adds: which process may write, each job's share of the cores, a DDP
fix for Hydra multiruns, and a report of the runs of a sweep that did not complete."""

from __future__ import annotations

import atexit
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from train import rundir


def is_rank_zero() -> bool:
    """Rank 0 of a data-parallel run (or a plain run) writes the run directory; the other
    ranks only train. Lightning reads the rank from the environment its launcher (or SLURM) sets."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"  # hydra/launcher=parallel


def cores_per_job() -> int | None:
    """This job's share of the cores when n_jobs jobs of a sweep run at once on this machine
    (hydra/launcher=parallel), else None. n_jobs counts as joblib counts it (-1: one per core)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    launcher = HydraConfig.get().launcher
    if launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    import joblib  # the launcher's own dependency: its count of usable cores (affinity, cgroups)

    cores, n_jobs = joblib.cpu_count(), launcher.get("n_jobs") or 1
    jobs = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
    return max(1, cores // max(1, jobs))


def share_cores() -> None:
    """Each torch thread pool defaults to every core: n_jobs of them side by side would fight
    over the cores. As the observatory's sweep workers do, take this job's share instead."""
    threads = cores_per_job()
    if threads:
        torch.set_num_threads(threads)


DDP_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def one_job_of_many():
    """Lets the jobs of a multirun share one process under DDP.

    Lightning starts each extra DDP rank by running sys.argv again: in a Hydra multirun that
    would be the whole sweep (every job again, in duplicate sweep dirs), so it gets this job's
    overrides. It also leaves its rendezvous variables in os.environ and the process group
    open, which would make the next job believe its ranks already exist: both are undone."""
    argv, environment = sys.argv, {k: os.environ.get(k) for k in DDP_ENVIRONMENT}
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and {"-m", "--multirun"} & set(argv):
        sys.argv = [argv[0], *HydraConfig.get().overrides.task]
    try:
        yield
    finally:
        sys.argv = argv
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class ReportFailures(Callback):
    """Hydra callback: when a sweep ends, however it ends, list the runs it touched that did
    not complete (their status from run.json); re-running the sweep redoes only those."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        atexit.register(report_unfinished_runs, Path(config.hydra.sweep.dir), time.time())


def unfinished_runs(sweep_dir: Path, since: float) -> list[tuple[str, str]]:
    """(run, status) of each run dir under `sweep_dir` written since `since` and not completed."""
    runs = []
    for record in sorted(Path(sweep_dir).glob(f"*/{rundir.RUN_JSON}")):
        if record.stat().st_mtime >= since - 1:
            status = rundir.read_run_json(record.parent)["status"]
            if status != "completed":
                runs.append((record.parent.name, status))
    return runs


def report_unfinished_runs(sweep_dir: Path, since: float) -> None:
    runs = unfinished_runs(sweep_dir, since)
    if runs:
        lines = [f"error: {len(runs)} run(s) of this sweep did not complete (run the same command again to redo "
                 f"only these):"] + [f"  {sweep_dir / run}: {status}" for run, status in runs]
        print("\n".join(lines), file=sys.stderr, flush=True)
