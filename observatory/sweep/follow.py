"""`python -m observatory follow=true`: probe each checkpoint while training runs, as soon as
its manifest row is written (training appends the row only after the file is durable, and the
sha256 is checked on loading: a half-written file is never read), and log its rows to W&B at
its step, so the curves grow while the models train. Started before, during or after training;
it ends by itself when no training process of the experiment is alive and every run has
completed or failed (a run killed outright stays `running`: the follower waits for its resume),
or on Ctrl-C (the same command resumes: what is stored is skipped)."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from conf import own_keys
from observatory import store
from observatory.sweep.discovery import find_runs
from observatory.sweep.ngram_tables import StreamError
from observatory.sweep.runner import Summary, SweepError, _sweep, check_probes, consolidate, count_ngrams, resolve_device
from train import rundir


def follow_from_config(cfg: DictConfig, share=None, trainer_exited=None, log_rows=None) -> Summary:
    cfg = own_keys(cfg, "observatory")
    if cfg.shards > 1 or cfg.adaptive:
        raise SweepError("follow=true probes every checkpoint as it lands, in one job: drop "
                         f"{'shards=' if cfg.shards > 1 else 'adaptive='}... (shard or thin the sweep after training)")
    return follow(store.experiment_dir(cfg), OmegaConf.to_container(cfg.probes, resolve=True),
                  batch_size=cfg.batch_size, device=resolve_device(cfg.device), poll_seconds=cfg.poll_seconds, share=share,
                  trainer_exited=trainer_exited, log_rows=log_rows)


def follow(experiment_dir: Path, probe_cfgs: dict, batch_size: int = 256, device: str = "cpu",
           poll_seconds: float = 5.0, share=None, trainer_exited=None, log_rows=None) -> Summary:
    """Probe checkpoints as they land until training has ended (or `trainer_exited()`, when the
    caller started training itself: it may have stopped before writing any run), handing each
    checkpoint's rows to `log_rows(run, rows)` in step order (W&B: report/wandb_log.py
    LiveCurves); the summary, with the consolidated table."""
    check_probes(probe_cfgs)
    experiment_dir = Path(experiment_dir)
    summary = Summary(probes=list(probe_cfgs), experiment_dir=experiment_dir)
    seen: set[tuple[str, int, str]] = set()  # (run, step, sha256) handled: probed, found stored, or failed
    counted: set[Path] = set()  # runs whose n-gram tables exist
    print(f"following {experiment_dir}: probing each checkpoint as it lands (Ctrl-C stops; the same command "
          "resumes)", flush=True)
    try:
        with store.exclusive(experiment_dir):
            waiting = False
            while True:
                # before looking: whatever the runs wrote before they ended is in the manifests now
                ended = training_ended(experiment_dir) or bool(trainer_exited and trainer_exited())
                run_dirs = find_runs(experiment_dir)
                if run_dirs:
                    _poll(experiment_dir, run_dirs, probe_cfgs, batch_size, device, seen, summary, log_rows, share,
                          counted)
                elif not waiting:
                    print(f"no run under {experiment_dir} yet: waiting for training to start one (Ctrl-C stops)",
                          flush=True)
                    waiting = True
                if ended:
                    break
                with share.idle() if share else nullcontext():  # training takes the cores meanwhile
                    time.sleep(poll_seconds)
            if not run_dirs:  # training stopped before writing any run (the pipeline's overlap=true)
                raise SweepError(f"training wrote no run under {experiment_dir}: nothing to probe")
            summary.runs, summary.checkpoints = len(run_dirs), len(seen)
            summary.table = consolidate(experiment_dir)
    except (store.StoreBusy, StreamError) as e:
        raise SweepError(str(e)) from None
    return summary


def training_ended(experiment_dir: Path) -> bool:
    """No training process of the experiment alive, and every run completed or failed."""
    runs = find_runs(experiment_dir)
    return (bool(runs) and not rundir.training_under_way(experiment_dir)
            and all(rundir.has_ended(rundir.read_run_json(r)["status"]) for r in runs))


def _poll(experiment_dir: Path, run_dirs: list[Path], probe_cfgs: dict, batch_size: int, device: str,
          seen: set, summary: Summary, log_rows, share, counted: set) -> None:
    """Probe what has landed since the last look; log it. `counted`: the runs whose n-gram
    tables are counted already (a new run's, before its first checkpoint)."""
    count_ngrams([r for r in run_dirs if r not in counted], probe_cfgs)
    counted.update(run_dirs)
    found = _sweep(experiment_dir, run_dirs, probe_cfgs, workers=1, batch_size=batch_size, progress=False,
                   adaptive=None, shard=0, shards=1, device=device, seen=frozenset(seen), consolidating=False,
                   share=share)
    summary.probed += found.probed
    summary.skipped += found.skipped
    summary.problems += found.problems
    for ckpt, rows in sorted(found.rows.items(), key=lambda item: (item[0].run, item[0].step)):
        seen.add((ckpt.run, ckpt.step, ckpt.sha256))
        if len(rows) and log_rows:
            log_rows(ckpt.run, rows)
    for problem in found.problems:
        print(f"  failed: {problem.run} step {problem.step}: {problem.reason}", file=sys.stderr, flush=True)
    if found.probed:
        latest = {c.run: c.step for c in sorted(found.rows, key=lambda c: c.step)}
        print(f"probed {found.probed} new checkpoint(s): " + ", ".join(f"{run} to step {step}"
                                                                      for run, step in sorted(latest.items())),
              flush=True)
