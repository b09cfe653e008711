"""What running many jobs adds: which process may write, each job's share of the cores, a DDP
fix for Hydra multiruns, and a report of the runs of a sweep that did not complete."""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import sys
import tempfile
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


class CoreShare:
    """This process's share of the cores among the project's jobs running on this machine now
    (training jobs, the observatory's sweeps, shards and followers), recomputed whenever
    `update()` is called: n jobs side by side take cores // n torch threads each, and a job's
    share grows when its neighbours finish, so that jobs side by side never take longer in all
    than the same jobs one after another. Each job holds a lock on its own file in a registry
    directory (one per user and set of usable cores, so that jobs confined to other cores, as
    SLURM confines them, do not count); the kernel lets it go however the job ends.

    A job that has never had a neighbour keeps torch's own thread count: on CPU the number of
    threads changes the last bits of the results (3e-6 in the weights after 40 steps of the
    debug run), and a job alone stays bitwise what it always was."""

    def __init__(self, registry: Path | None = None):
        cpus = sorted(os.sched_getaffinity(0))
        self.cores = len(cpus)
        key = hashlib.sha256(",".join(map(str, cpus)).encode()).hexdigest()[:12]
        self.registry = registry or Path(tempfile.gettempdir()) / f"observatory-jobs-{os.getuid()}-{key}"
        self.registry.mkdir(parents=True, exist_ok=True)
        self._register()
        self.default_threads = torch.get_num_threads()
        self.crowded = False  # has shared the cores: from then on its share follows the jobs running

    def jobs(self) -> int:
        """Jobs alive in the registry now, this one included; the files of ended ones are removed."""
        alive = 0
        for path in self.registry.iterdir():
            try:
                with open(path) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        alive += 1
                        continue
                    path.unlink(missing_ok=True)  # its job has ended
            except FileNotFoundError:
                continue  # another job removed it first
        return max(alive, 1)

    def threads(self) -> int:
        jobs = self.jobs()
        self.crowded = self.crowded or jobs > 1
        return max(1, self.cores // jobs) if self.crowded else self.default_threads

    def update(self) -> int:
        threads = self.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads

    @contextmanager
    def idle(self):
        """Out of the registry while the job waits (a follower between polls): its neighbours
        take its cores meanwhile, and it takes its share again when it has work."""
        self._unregister()
        try:
            yield
        finally:
            self._register()

    def close(self) -> None:
        torch.set_num_threads(self.default_threads)
        self._unregister()

    def _register(self) -> None:
        self._own = open(self.registry / str(os.getpid()), "w")
        fcntl.flock(self._own, fcntl.LOCK_EX)

    def _unregister(self) -> None:
        (self.registry / str(os.getpid())).unlink(missing_ok=True)
        self._own.close()


@contextmanager
def sharing_cores():
    """A CoreShare for the life of a job, its first share taken at once (under the parallel
    launcher no fewer jobs than it runs at a time: the neighbours may not have registered yet)."""
    share = CoreShare()
    initial = cores_per_job()
    share.crowded = initial is not None
    torch.set_num_threads(min(initial, share.threads()) if initial else share.threads())
    try:
        yield share
    finally:
        share.close()


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


_HELD: list = []  # the training locks this sweep's launcher holds


class ReportFailures(Callback):
    """Hydra callback: when a sweep ends, however it ends, list the runs it touched that did
    not complete (their status from run.json); re-running the sweep redoes only those."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        atexit.register(report_unfinished_runs, Path(config.hydra.sweep.dir), time.time())
        # between jobs too, the experiment is being trained (a follower waits): held until this process
        # ends. Not on the callback: launchers pickle it for their workers, and a file does not pickle
        _HELD.append(rundir.hold_training_lock(Path(config.hydra.sweep.dir)))


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
