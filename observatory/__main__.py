"""`python -m observatory [experiment=<name>] [overrides]`: probe every checkpoint of every run
of an experiment, then write the report (conf/observatory.yaml)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train.wandb_run import INTERRUPTED

RESUMES = "run the same command to resume (the checkpoints already probed are kept)"


def observe(cfg: DictConfig) -> int:
    """Sweep, report, W&B: the observatory's whole job for a composed config; the exit status
    (130 after Ctrl-C, which leaves every checkpoint probed so far stored)."""
    try:
        return _observe(cfg)
    except KeyboardInterrupt:
        print(f"interrupted: {RESUMES}", file=sys.stderr)
        return INTERRUPTED


def _observe(cfg: DictConfig) -> int:
    from observatory.report.build import analyse, write
    from observatory.report.wandb_log import log_results
    from observatory.sweep import SweepError, sweep_from_config

    try:
        summary = sweep_from_config(cfg)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    out = summary.experiment_dir / "observatory"
    print(f"results: {out / 'results.parquet'} ({len(summary.table):,} rows)", flush=True)
    if not len(summary.table):
        print("error: no results to report (every checkpoint failed to load; see above)", file=sys.stderr)
        return 1
    report = analyse(summary.experiment_dir)
    index = write(report, summary.experiment_dir)
    if cfg.wandb.mode != "disabled":
        log_results(summary.table, cfg.experiment_name, out, cfg.wandb.mode, report)
    print(closing_summary(out, cfg.wandb.mode))
    print(f"report: {index}")
    return 1 if summary.problems else 0


def closing_summary(out: Path, wandb_mode: str, most: int = 6) -> str:
    """What emerged, in the report headline's own sentences (the first `most`), and where the
    offline W&B runs wait to be uploaded."""
    found = (out / "headline.txt").read_text().splitlines()
    lines = ["what emerged:", *(f"  {line}" for line in found[:most])]
    if len(found) > most:
        lines.append(f"  ... and {len(found) - most} more in the report")
    if wandb_mode == "offline":
        lines.append(f"W&B runs (offline): upload with  wandb sync {out.parent}/*/wandb/offline-run-*")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="observatory")
def main(cfg: DictConfig) -> None:
    sys.exit(observe(cfg))


if __name__ == "__main__":
    main()
