"""`python -m observatory [experiment=<name>] [overrides]`: probe every checkpoint of every run
of an experiment, then write the report (conf/observatory.yaml)."""

import sys

import hydra
from omegaconf import DictConfig


def observe(cfg: DictConfig) -> int:
    """Sweep, report, W&B: the observatory's whole job for a composed config; the exit status."""
    import pandas as pd

    from observatory.report import write_report
    from observatory.sweep import SweepError, sweep_from_config
    from observatory.wandb_log import log_results

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
    index = write_report(summary.experiment_dir)
    if cfg.wandb.mode != "disabled":
        log_results(summary.table, cfg.experiment_name, out, cfg.wandb.mode,
                    emergence=pd.read_parquet(out / "emergence.parquet"), charts=sorted((out / "charts").glob("*.png")))
    print(f"report: {index}")
    return 1 if summary.problems else 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="observatory")
def main(cfg: DictConfig) -> None:
    sys.exit(observe(cfg))


if __name__ == "__main__":
    main()
