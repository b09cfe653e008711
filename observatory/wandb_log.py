"""Probe results to Weights & Biases: one observatory run per training run, whose metrics use
the training step as their x-axis (and tokens), logged in step order; one summary run per
experiment with the whole table. Offline unless asked otherwise, like training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PROJECT = "observatory"


def _init(experiment: str, name: str, job_type: str, save_dir: Path, mode: str):
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=PROJECT, group=experiment, job_type=job_type, name=name,
                      id=f"{experiment}-{name}-{job_type}", dir=str(save_dir), mode=mode, resume="allow")


def log_results(table: pd.DataFrame, experiment: str, save_dir: Path, mode: str = "offline") -> None:
    for run_name, rows in table.groupby("run", sort=True):
        run = _init(experiment, run_name, "observatory", save_dir, mode)
        run.define_metric("train/step")
        run.define_metric("train/tokens", step_metric="train/step")
        run.define_metric("*", step_metric="train/step")
        first = rows.iloc[0]
        run.config.update({k: first[k].item() if hasattr(first[k], "item") else first[k]
                           for k in ("model", "seed", "n_params", "n_params_non_embedding")}, allow_val_change=True)
        for step, at_step in rows.groupby("step", sort=True):
            metrics = {f"{p}/{m}": v for p, m, v in zip(at_step["probe"], at_step["metric"], at_step["value"])}
            run.log({"train/step": int(step), "train/tokens": int(at_step["tokens"].iloc[0]), **metrics})
        run.finish()
    summary = _init(experiment, "summary", "observatory-summary", save_dir, mode)
    import wandb

    summary.log({"results": wandb.Table(dataframe=table.reset_index(drop=True))})
    summary.finish()
