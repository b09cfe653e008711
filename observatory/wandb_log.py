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


def log_results(table: pd.DataFrame, experiment: str, save_dir: Path, mode: str = "offline",
                emergence: pd.DataFrame | None = None, charts: list[Path] = ()) -> None:
    """Per training run: its probe curves against train/step, and its onsets in the run summary.
    Per experiment: a summary run with the results and emergence tables, line series across
    sizes for every headline curve, and the report's charts as images."""
    for run_name, rows in table.groupby("run", sort=True):
        run = _init(experiment, run_name, "observatory", save_dir, mode)
        run.define_metric("train/step")
        run.define_metric("train/tokens", step_metric="train/step")
        run.define_metric("*", step_metric="train/step")
        first = rows.iloc[0]
        run.config.update({k: first[k].item() if hasattr(first[k], "item") else first[k]
                           for k in ("model", "seed", "n_params", "n_params_non_embedding")}, allow_val_change=True)
        for step, at_step in rows.groupby("step", sort=True):
            metrics = {_key(p, m, at_step): v for p, m, v in zip(at_step["probe"], at_step["metric"], at_step["value"])}
            run.log({"train/step": int(step), "train/tokens": int(at_step["tokens"].iloc[0]), **metrics})
        if emergence is not None:
            found = emergence[(emergence["run"] == run_name) & emergence["has_onset"]]
            for probe, metric, step in zip(found["probe"], found["metric"], found["onset_step"]):
                run.summary[f"onset/{probe}/{metric}"] = float(step)
        run.finish()
    import wandb

    summary = _init(experiment, "summary", "observatory-summary", save_dir, mode)
    logged = {"results": wandb.Table(dataframe=table.reset_index(drop=True))}
    if emergence is not None:
        readable = emergence.reset_index(drop=True).astype(object).where(emergence.notna(), None)  # NaN -> null
        logged["emergence"] = wandb.Table(dataframe=readable)
        for probe, metric in emergence[emergence["has_onset"]][["probe", "metric"]].drop_duplicates().itertuples(index=False):
            logged[f"curves/{probe}/{metric}"] = _line_series(table, probe, metric)
    logged |= {f"charts/{path.stem}": wandb.Image(str(path)) for path in charts}
    summary.log(logged)
    summary.finish()


def _key(probe: str, metric: str, at_step: pd.DataFrame) -> str:
    """The W&B key of a metric; an LLC estimate the sampler flags as unhealthy (its `healthy`
    is 0 at this step) goes under llc/unhealthy/..., so that llc/mean never charts it as fine."""
    if probe != "llc" or not (metric.endswith("mean") or "chain/" in metric):
        return f"{probe}/{metric}"
    prefix = metric.split("chain/")[0] if "chain/" in metric else metric[: -len("mean")]
    healthy = at_step.loc[(at_step["probe"] == "llc") & (at_step["metric"] == f"{prefix}healthy"), "value"]
    return f"llc/unhealthy/{metric}" if len(healthy) and healthy.iloc[0] < 0.5 else f"llc/{metric}"


def _line_series(table: pd.DataFrame, probe: str, metric: str):
    """One line per size (mean over seeds) against the training step."""
    import wandb

    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    means = rows.groupby(["n_params", "model", "step"])["value"].mean().reset_index()
    steps = sorted(means["step"].unique())
    lines, keys = [], []
    for (_, model), curve in means.groupby(["n_params", "model"], sort=True):
        lines.append(curve.set_index("step")["value"].reindex(steps).tolist())
        keys.append(model)
    return wandb.plot.line_series(xs=steps, ys=lines, keys=keys, title=f"{probe}: {metric}", xname="train/step")
