"""What checkpoints cost: the training run of `python -m train` (default Pythia-style
schedule: weights, held-out losses, manifest row and resume state at every scheduled step)
vs the same run with `callbacks=none`, side by side in one process.

    python benchmarks/checkpoint_cost.py [--sizes 13k 100k] [--steps 2000] [--repeats 2]

Prints, per size, the wall time of each, the share of the run the checkpoints add
((with - without) / with), the share measured directly inside the callbacks (target <= 3%),
and, within the runs with checkpoints, how much longer than the run's median step the AFTER
steps following each checkpoint took, as a share of the run: a checkpoint that slowed the
steps after it (which the time inside the callback does not see) would show there, free of
the drift between runs.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
from common import interleaved, train_config

from train import rundir
from train.build import build
from train.data import build_corpus

AFTER = 10  # steps after each checkpoint compared with the run's median step


class StepEnds(L.Callback):
    """First of the run's callbacks: when training started and when each step ended, before
    any later callback (the checkpoint's) runs."""

    def __init__(self):
        self.started, self.at = None, {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.at[trainer.global_step] = time.perf_counter()


class InCallbacks(L.Callback):
    """Last of the run's callbacks: the seconds spent in the callbacks between `ends` and this
    one after each step (0: at train start), summed while gradients accumulate."""

    def __init__(self, ends: StepEnds):
        self.ends, self.seconds = ends, {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.seconds[0] = time.perf_counter() - self.ends.started

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - self.ends.at[step]


def seconds_lost_after(ends: dict[int, float], in_callback: dict[int, float], written: set[int]) -> float:
    """Seconds the AFTER steps following each written checkpoint (each step once, where
    checkpoints are closer than that) took beyond the run's median step (negative: faster); a
    step's duration leaves out the callbacks run in it. The first steps of a run are its
    slowest and follow the densest checkpoints (1, 2, 4, ...): an upper bound."""
    steps = sorted(ends)
    duration = {b: ends[b] - ends[a] - in_callback.get(a, 0.0) for a, b in zip(steps, steps[1:])}
    after = {s + k for s in written for k in range(1, AFTER + 1)} & duration.keys()
    median = np.median(list(duration.values()))
    return float(sum(duration[step] - median for step in after))


def timed_run(overrides: list[str], corpus, run_dir: Path, checkpoints: bool) -> tuple[float, float, int, float]:
    """(wall seconds of fit, seconds inside the run's callbacks, checkpoints written, seconds
    lost in the steps after them) of the training `python -m train` builds, with its default
    callbacks or with callbacks=none."""
    cfg = train_config(*overrides, f"run_dir={run_dir}", f"callbacks={'default' if checkpoints else 'none'}")
    run_dir.mkdir(parents=True)
    training = build(cfg, corpus)
    ends = StepEnds()
    in_callbacks = InCallbacks(ends)
    training.trainer.callbacks = [ends, *training.trainer.callbacks, in_callbacks]
    started = time.perf_counter()
    training.trainer.fit(training.module, datamodule=training.data)
    seconds = time.perf_counter() - started
    written = {row["step"] for row in rundir.read_manifest(run_dir)}
    lost_after = seconds_lost_after(ends.at, in_callbacks.seconds, written)
    return seconds, sum(in_callbacks.seconds.values()), len(written), lost_after


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["13k", "100k"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"default schedule, {args.steps} steps, {args.repeats} interleaved repeat(s)")
    print(f"{'size':>6} {'checkpoints':>11} {'with (s)':>9} {'without (s)':>12} {'added':>7} {'in callback':>12} "
          f"{f'{AFTER} steps after':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            overrides = [f"model={size}", f"trainer.max_steps={args.steps}"]
            corpus = build_corpus(train_config(*overrides).data)
            runs = itertools.count()  # a fresh run directory for every run
            with_, without = interleaved(
                args.repeats, lambda: timed_run(overrides, corpus, Path(tmp) / f"{size}-{next(runs)}", True),
                lambda: timed_run(overrides, corpus, Path(tmp) / f"{size}-{next(runs)}", False))
            n = with_[0][2]
            inside = [in_callback / seconds for seconds, in_callback, _, _ in with_]
            after = statistics.median(lost_after / seconds for seconds, _, _, lost_after in with_)
            w, wo = statistics.median(r[0] for r in with_), statistics.median(r[0] for r in without)
            print(f"{size:>6} {n:>11} {w:>9.1f} {wo:>12.1f} {(w - wo) / w:>7.1%} {statistics.median(inside):>12.1%} "
                  f"{after:>+15.1%}", flush=True)


if __name__ == "__main__":
    main()
