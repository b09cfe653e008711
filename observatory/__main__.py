"""`python -m observatory [experiment=<name>] [overrides]` — see conf/observatory.yaml."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="observatory")
def main(cfg: DictConfig) -> None:
    from observatory.sweep import SweepError, sweep_from_config
    from observatory.wandb_log import log_results

    try:
        summary = sweep_from_config(cfg)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = summary.experiment_dir / "observatory"
    if cfg.wandb.mode != "disabled" and len(summary.table):
        log_results(summary.table, cfg.experiment_name, out, cfg.wandb.mode)
    print(summary)
    print(f"results: {out / 'results.parquet'} ({len(summary.table):,} rows)")
    if summary.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
