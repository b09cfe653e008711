"""The main job, end to end: train every run of an experiment, probe every checkpoint,
write the emergence report.

    python -m observatory.pipeline                      # the quickstart experiment
    python -m observatory.pipeline experiment=grokking  # any experiment in conf/experiment/

Training runs as `python -m train -m <overrides>` (a Hydra multirun over the experiment's
sizes) in its own process: the observatory never imports the training machinery. Each
override goes to the stage whose config owns its key (conf/__init__.py: split_overrides);
experiment, experiment_name and checkpoints_dir go to both.
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
    split = split_overrides(args)

    started = time.perf_counter()
    print(f"[1/2] training: python -m train -m {' '.join(split['train'])}", flush=True)
    status = _train(split["train"])
    if status == INTERRUPTED:
        print("interrupted: run the same command to resume (finished runs and checkpoints are kept)", file=sys.stderr)
        return status
    if status != 0:
        print("error: training failed; fix it and run the same command again (finished runs are kept)", file=sys.stderr)
        return 1

    from observatory.__main__ import observe

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="observatory", overrides=split["observatory"])
    print(f"[2/2] observatory: python -m observatory {' '.join(split['observatory'])}", flush=True)
    status = observe(cfg)
    if status == INTERRUPTED:  # observe has said how to resume
        return status
    print(f"done in {time.perf_counter() - started:.0f}s")
    return status


def _train(overrides: list[str]) -> int:
    """`python -m train -m` in its own process; its exit status. Ctrl-C reaches it too (the
    terminal signals the whole process group): wait while it stops cleanly (status, resume
    state, W&B run) rather than kill it, unless Ctrl-C comes again."""
    process = subprocess.Popen([sys.executable, "-m", "train", "-m", *overrides])
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
