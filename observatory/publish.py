"""The observatory's last step, wherever the probing happened (one process, the shards of a
multirun, a follower): one results table from the per-checkpoint files, the report, W&B, and
the closing lines on the console."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from observatory import store
from observatory.sweep.discovery import find_runs


def publish(experiment_dir: Path, experiment_name: str, wandb_mode: str, table: pd.DataFrame | None = None,
            curves: bool = True) -> Path:
    """Consolidate (unless `table` is the consolidated table already), write the report, log to
    W&B (the curves too unless a follower has logged them); the report's index.html. Raises
    store.StoreBusy while shards are still writing."""
    from observatory.report.build import analyse, write
    from observatory.report.wandb_log import log_results

    if table is None:
        table = consolidated(experiment_dir)
    check_revisions(experiment_dir)
    report = analyse(experiment_dir)
    index = write(report, experiment_dir)
    if wandb_mode != "disabled":
        log_results(table, experiment_name, store.output_dir(experiment_dir), wandb_mode, report, curves)
    print(closing_summary(store.output_dir(experiment_dir), wandb_mode))
    return index


def consolidated(experiment_dir: Path) -> pd.DataFrame:
    """The results table, rebuilt from the per-checkpoint files whichever jobs wrote them; the
    stored table as it is where the runs' directories are gone (their manifests say which
    checkpoints still count: without them nothing would)."""
    from observatory.sweep.runner import consolidate

    if find_runs(experiment_dir):
        with store.exclusive(experiment_dir):  # no shard is still writing
            return consolidate(experiment_dir)
    return pd.read_parquet(store.output_dir(experiment_dir) / store.TABLES["checkpoints"][0])


def check_revisions(experiment_dir: Path) -> None:
    """integrity.csv: each hub run's revisions checked (observatory/hub/integrity.py), the
    suspect ones said on the console."""
    from observatory.hub import integrity
    from observatory.hub.source import is_hub_run
    from train import rundir

    hub_runs = [r for r in find_runs(experiment_dir) if is_hub_run(r)]
    if not hub_runs:
        return
    table = pd.concat([integrity.table(r, rundir.read_manifest(r)).assign(run=r.name) for r in hub_runs])
    store.write_integrity(experiment_dir, table)
    flagged = table[table["warning"] != ""]
    print(f"revisions checked: {len(table)}, {len(flagged)} suspect (left out of onsets; "
          f"{store.output_dir(experiment_dir) / store.INTEGRITY})", flush=True)
    for row in flagged.itertuples():
        print(f"  {row.run}@{row.revision}: {row.warning}", flush=True)


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


class PublishAfterShards(Callback):
    """Hydra callback: when a multirun of `python -m observatory` split into shards has ended
    (every launcher waits for its jobs), consolidate and publish, as the report command would."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("shards", 1) <= 1 or config.get("follow"):
            return
        experiment = store.experiment_dir(config)
        try:
            print(f"report: {publish(experiment, config.experiment_name, config.wandb.mode)}", flush=True)
        except (store.StoreBusy, ValueError) as e:
            print(f"error: the report was not written ({e}); run python -m observatory.report "
                  f"experiment_name={config.experiment_name} checkpoints_dir={config.checkpoints_dir}",
                  file=sys.stderr, flush=True)
