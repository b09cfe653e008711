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
from pathlib import Path

from hydra import compose, initialize_config_module

from conf import split_overrides


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("experiment=") for a in args):
        args.insert(0, "experiment=quickstart")
    split = split_overrides(args)
    train_args, probe_args = split["train"], split["observatory"]

    started = time.perf_counter()
    print(f"[1/3] training: python -m train -m {' '.join(train_args)}", flush=True)
    if subprocess.run([sys.executable, "-m", "train", "-m", *train_args]).returncode != 0:
        print("error: training failed; fix it and run the same command again (finished runs are kept)", file=sys.stderr)
        return 1

    import pandas as pd

    from observatory.report import write_report
    from observatory.sweep import sweep_from_config
    from observatory.wandb_log import log_results

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="observatory", overrides=probe_args)
    experiment_dir = Path(cfg.checkpoints_dir) / cfg.experiment_name
    print(f"[2/3] probing every checkpoint under {experiment_dir}", flush=True)
    summary = sweep_from_config(cfg)
    print(summary, flush=True)
    print("[3/3] emergence analysis and report", flush=True)
    index = write_report(experiment_dir)
    if cfg.wandb.mode != "disabled":
        out = experiment_dir / "observatory"
        log_results(summary.table, cfg.experiment_name, out, cfg.wandb.mode,
                    emergence=pd.read_parquet(out / "emergence.parquet"), charts=sorted((out / "charts").glob("*.png")))
    print(f"done in {time.perf_counter() - started:.0f}s: open {index}")
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
