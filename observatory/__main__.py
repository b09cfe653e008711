"""`python -m observatory [experiment=<name>] [overrides]` — see conf/observatory.yaml."""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../conf", config_name="observatory")
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from observatory.sweep import SweepError, sweep
    from observatory.wandb_log import log_results

    experiment_dir = Path(cfg.checkpoints_dir) / cfg.experiment_name
    probes = OmegaConf.to_container(cfg.probes, resolve=True)
    try:
        summary = sweep(experiment_dir, probes, workers=cfg.workers, batch_size=cfg.batch_size,
                        progress=sys.stderr.isatty() if cfg.progress is None else cfg.progress,
                        adaptive=cfg.adaptive)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if cfg.wandb.mode != "disabled" and len(summary.table):
        log_results(summary.table, cfg.experiment_name, experiment_dir / "observatory", cfg.wandb.mode)
    print(summary)
    print(f"results: {experiment_dir / 'observatory' / 'results.parquet'} ({len(summary.table):,} rows)")
    if summary.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
