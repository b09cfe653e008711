"""The main job, end to end: train every run of an experiment, probe every checkpoint,
write the emergence report.

    python -m observatory.pipeline                      # the quickstart experiment
    python -m observatory.pipeline experiment=grokking  # any experiment in conf/experiment/
    python -m observatory.pipeline overlap=true         # probe each checkpoint while training runs

Training runs as `python -m train -m <overrides>` (a Hydra multirun over the experiment's
sizes) in its own process: the observatory never imports the training machinery. Each
override goes to the stage whose config owns its key (conf/__init__.py: split_overrides);
experiment, experiment_name and checkpoints_dir go to both. With `overlap=true` (the
pipeline's own switch) the observatory follows training (follow=true) instead of waiting for it,
each taking its share of the cores (benchmarks/scale_out.py measures whether that pays).
"""

from __future__ import annotations

import subprocess
import sys
import time

from hydra import compose, initialize_config_module

from conf import split_overrides
from train.wandb_run import INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("experiment=") for a in args):
        args.insert(0, "experiment=quickstart")
        print("no experiment= given: running experiment=quickstart", flush=True)
    overlap = "overlap=true" in args
    args = [a for a in args if a not in ("overlap=true", "overlap=false")]
    split = split_overrides(args)
    started = time.perf_counter()
    if overlap:
        return _overlapped(split, started)

    print(f"[1/2] training: python -m train -m {' '.join(split['train'])}", flush=True)
    status = _train(split["train"])
    if status == INTERRUPTED:
        print("interrupted: run the same command to resume (finished runs and checkpoints are kept)", file=sys.stderr)
        return status
    if status != 0:
        print("error: training failed; fix it and run the same command again (finished runs are kept)", file=sys.stderr)
        return 1

    from observatory.__main__ import observe

    print(f"[2/2] observatory: python -m observatory {' '.join(split['observatory'])}", flush=True)
    status = observe(_observatory_config(split["observatory"]))
    if status == INTERRUPTED:  # observe has said how to resume
        return status
    print(f"done in {time.perf_counter() - started:.0f}s")
    return status


def _overlapped(split: dict[str, list[str]], started: float) -> int:
    """Training in its own process, the observatory following it in this one."""
    from observatory.__main__ import observe

    overrides = [*split["observatory"], "follow=true"]
    print(f"training: python -m train -m {' '.join(split['train'])}\n"
          f"beside it, the observatory: python -m observatory {' '.join(overrides)}", flush=True)
    process = subprocess.Popen([sys.executable, "-m", "train", "-m", *split["train"]])
    try:
        status = observe(_observatory_config(overrides), trainer_exited=lambda: process.poll() is not None)
    finally:
        trained = _wait(process)
    if trained not in (0, INTERRUPTED):
        print("error: training failed; fix it and run the same command again (finished runs are kept)", file=sys.stderr)
    print(f"done in {time.perf_counter() - started:.0f}s")
    return trained or status


def _observatory_config(overrides: list[str]):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="observatory", overrides=overrides)


def _train(overrides: list[str]) -> int:
    """`python -m train -m` in its own process; its exit status. Ctrl-C reaches it too (the
    terminal signals the whole process group): wait while it stops cleanly (status, resume
    state, W&B run) rather than kill it, unless Ctrl-C comes again."""
    return _wait(subprocess.Popen([sys.executable, "-m", "train", "-m", *overrides]))


def _wait(process: subprocess.Popen) -> int:
    try:
        return process.wait()
    except KeyboardInterrupt:
        try:
            process.wait()
        except KeyboardInterrupt:
            process.kill()
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
