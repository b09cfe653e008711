"""Probe results to Weights & Biases, on the conventions of train/wandb_run.py (run ids,
settings, the one step axis): one observatory run per training run, whose probe curves use
train/step as their x-axis (the training run's losses use it too) with train/tokens, and one
summary run per experiment whose panels need no chart building: the emergence map, each task's
curves across sizes, the stage boundaries, the results and emergence tables and the report's
charts. The same ids on a re-run: the runs are updated, not copied. Offline unless asked
otherwise, like training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from observatory.findings import tasks
from train import wandb_run


def log_results(table: pd.DataFrame, experiment: str, save_dir: Path, mode: str = "offline",
                emergence: pd.DataFrame | None = None, charts: list[Path] = (), by_size: pd.DataFrame | None = None,
                stages: pd.DataFrame | None = None) -> None:
    """Per training run: its probe curves against train/step, and its onsets in the run summary.
    Per experiment: the summary run (`by_size`: onsets_by_size, the emergence map; `stages`:
    the stage boundaries; both as the report wrote them)."""
    for run_name, rows in table.groupby("run", sort=True):
        with wandb_run.started(experiment, "observatory", save_dir, mode, run=run_name) as run:
            _log_run(run, rows, emergence)
    with wandb_run.started(experiment, "summary", save_dir, mode) as summary:
        summary.run.log(_summary_panels(table, emergence, charts, by_size, stages))


def _log_run(run: wandb_run.StepRun, rows: pd.DataFrame, emergence: pd.DataFrame | None) -> None:
    first = rows.iloc[0]
    run.run.config.update({k: first[k].item() if hasattr(first[k], "item") else first[k]
                           for k in ("model", "seed", "n_params", "n_params_non_embedding")}, allow_val_change=True)
    for step, at_step in rows.groupby("step", sort=True):
        metrics = {metric_key(p, m, at_step): v for p, m, v in zip(at_step["probe"], at_step["metric"], at_step["value"])}
        run.log({"train/tokens": int(at_step["tokens"].iloc[0]), **metrics}, step=int(step))
    if emergence is not None:
        found = emergence[(emergence["run"] == first["run"]) & emergence["has_onset"]]
        for probe, metric, step in zip(found["probe"], found["metric"], found["onset_step"]):
            run.run.summary[f"onset/{probe}/{metric}"] = float(step)


def _summary_panels(table, emergence, charts, by_size, stages) -> dict:
    """Tables, one line series per curve worth a panel (each task's headline and continuous
    metrics, and every curve with an onset), and the report's charts as images."""
    import wandb

    logged = {"results": wandb.Table(dataframe=table.reset_index(drop=True))}
    curves = {("capability", metric) for task in tasks(table) for metric in task.metrics}
    for name, frame in (("emergence", emergence), ("emergence_map", by_size), ("stages", stages)):
        if frame is not None:
            logged[name] = wandb.Table(dataframe=_readable(frame))
    if emergence is not None:
        curves |= set(emergence[emergence["has_onset"]][["probe", "metric"]].itertuples(index=False, name=None))
    logged |= {f"curves/{probe}/{metric}": _line_series(table, probe, metric) for probe, metric in sorted(curves)}
    logged |= {f"charts/{path.stem}": wandb.Image(str(path)) for path in charts}
    return logged


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN as null, and every value a plain one (a W&B table column holds one type)."""
    frame = frame.reset_index(drop=True).astype(object)
    return frame.where(frame.notna(), None)


def metric_key(probe: str, metric: str, at_step: pd.DataFrame) -> str:
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
    return wandb.plot.line_series(xs=steps, ys=lines, keys=keys, title=f"{probe}: {metric}", xname=wandb_run.STEP)
