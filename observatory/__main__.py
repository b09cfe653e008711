"""`python -m observatory [experiment=<name>] [overrides]`: probe every checkpoint of every run
of an experiment, then write the report (conf/observatory.yaml). With `follow=true`, as training
writes them; with `-m shard='range(0,N)' shards=N`, split into N jobs (docs/slurm.md)."""

import sys

import hydra
from omegaconf import DictConfig

from train.wandb_run import INTERRUPTED

RESUMES = "run the same command to resume (the checkpoints already probed are kept)"


def observe(cfg: DictConfig, trainer_exited=None) -> int:
    """Sweep, report, W&B: the observatory's whole job for a composed config; the exit status
    (130 after Ctrl-C, which leaves every checkpoint probed so far stored)."""
    try:
        return _observe(cfg, trainer_exited)
    except KeyboardInterrupt:
        print(f"interrupted: {RESUMES}", file=sys.stderr)
        return INTERRUPTED


def _observe(cfg: DictConfig, trainer_exited=None) -> int:
    from observatory import store
    from observatory.publish import publish
    from observatory.report.wandb_log import LiveCurves
    from observatory.sweep import SweepError, sweep_from_config
    from observatory.sweep.follow import follow_from_config
    from train.multirun import sharing_cores

    try:
        with sharing_cores() as share:  # beside other jobs on this machine, its share of the cores
            if cfg.follow:
                with LiveCurves(cfg.experiment_name, store.output_dir(store.experiment_dir(cfg)), cfg.wandb.mode) as curves:
                    summary = follow_from_config(cfg, share, trainer_exited, curves.log)
            else:
                summary = sweep_from_config(cfg, share)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    if summary.shards > 1:
        print(f"shard {summary.shard} done; after the last shard, python -m observatory.report "
              f"experiment_name={cfg.experiment_name} checkpoints_dir={cfg.checkpoints_dir} consolidates "
              "the results and writes the report (a multirun does this by itself)", flush=True)
        return 1 if summary.problems else 0
    out = summary.experiment_dir / "observatory"
    print(f"results: {out / 'results.parquet'} ({len(summary.table):,} rows)", flush=True)
    if not len(summary.table):
        print("error: no results to report (every checkpoint failed to load; see above)", file=sys.stderr)
        return 1
    try:
        index = publish(summary.experiment_dir, cfg.experiment_name, cfg.wandb.mode, summary.table, curves=not cfg.follow)
    except store.StoreBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 1 if summary.problems else 0


class JobFailed(Exception):
    """One job of a multirun (a shard) failed: Hydra records it, runs the others, then exits 1."""


@hydra.main(version_base="1.3", config_path="../conf", config_name="observatory")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    status = observe(cfg)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(status)
    if status:  # an exit here would end the other jobs too (and the report after them)
        raise JobFailed(f"shard {cfg.shard}: exit status {status} (see above)")


if __name__ == "__main__":
    main()
