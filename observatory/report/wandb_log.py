"""Probe results to Weights & Biases, on the conventions of train/wandb_run.py (run ids,
settings, the one step axis): one observatory run per training run, whose probe curves use
train/step as their x-axis (the training run's losses use it too) with train/tokens, and one
summary run per experiment whose panels need no chart building: the emergence map, each task's
curves across sizes, the stage boundaries, the results and emergence tables and the report's
charts, the very figures of the page (interactive, as plotly). The same ids on a re-run: the
runs are updated, not copied. Offline unless asked otherwise, like training."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd

from observatory.analysis.stages import LLC_PROBE, llc_estimates, llc_signal
from observatory.analysis.tables import tasks
from observatory.metrics import STAGE_SIGNAL
from observatory.report.findings import headline_text
from train import wandb_run


def log_results(table: pd.DataFrame, experiment: str, save_dir: Path, mode: str = "offline", report=None,
                curves: bool = True) -> None:
    """Per training run: its probe curves against train/step (unless `curves` is false: a
    follower has logged them as they came), and its onsets in the run summary. Per experiment:
    the summary run, from the report (observatory/report/build.py) when given."""
    emergence = report.tables["emergence"] if report is not None else None
    for run_name, rows in table.groupby("run", sort=True):
        with observatory_run(experiment, save_dir, mode, run_name, rows, fresh=curves) as run:
            if curves:
                log_checkpoints(run, rows)
            _log_onsets(run, rows, emergence)
    with wandb_run.started(experiment, "summary", save_dir, mode) as summary:
        summary.run.log(_summary_panels(table, report))
        if report is not None:  # what emerged, in the sentences of the console and the page
            summary.run.summary["headline"] = "\n".join(headline_text(report.found))


@contextmanager
def observatory_run(experiment: str, save_dir: Path, mode: str, run_name: str, rows: pd.DataFrame,
                    fresh: bool = True):
    """The observatory's W&B run of one training run, its config from the run's rows. `fresh`:
    a run that logs its whole history (the earlier offline files go); else one that continues
    them (a follower's, or the summary it gets at the end)."""
    opened = wandb_run.started if fresh else wandb_run.continued
    with opened(experiment, "observatory", save_dir, mode, run=run_name) as run:
        first = rows.iloc[0]
        run.run.config.update({k: first[k].item() if hasattr(first[k], "item") else first[k]
                               for k in ("model", "seed", "n_params", "n_params_non_embedding")}, allow_val_change=True)
        yield run


def log_checkpoints(run: wandb_run.StepRun, rows: pd.DataFrame) -> None:
    """One W&B row per checkpoint, at its step, in step order."""
    keys = metric_keys(rows)
    for step, at_step in rows.groupby("step", sort=True):
        run.log({"train/tokens": int(at_step["tokens"].iloc[0]),
                 **{keys[i]: v for i, v in zip(at_step.index, at_step["value"])}}, step=int(step))


def _log_onsets(run: wandb_run.StepRun, rows: pd.DataFrame, emergence: pd.DataFrame | None) -> None:
    if emergence is not None:
        found = emergence[(emergence["run"] == rows["run"].iloc[0]) & emergence["has_onset"]]
        for probe, metric, step in zip(found["probe"], found["metric"], found["onset_step"]):
            run.run.summary[f"onset/{probe}/{metric}"] = float(step)


class LiveCurves:
    """A follower's W&B: one run per training run, opened at its first rows and kept open while
    following; each checkpoint's rows logged at its step as they come (in step order: the step
    axis only grows). A context manager: the runs finish when it closes."""

    def __init__(self, experiment: str, save_dir: Path, mode: str):
        self.experiment, self.save_dir, self.mode = experiment, save_dir, mode
        self.stack, self.runs = ExitStack(), {}

    def __enter__(self) -> LiveCurves:
        self.stack.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return self.stack.__exit__(*exc)

    def log(self, run: str, rows: pd.DataFrame) -> None:
        if self.mode == "disabled":
            return
        if run not in self.runs:
            self.runs[run] = self.stack.enter_context(
                observatory_run(self.experiment, self.save_dir, self.mode, run, rows, fresh=False))
        log_checkpoints(self.runs[run], rows)


def metric_keys(rows: pd.DataFrame) -> pd.Series:
    """Each row's W&B key, <probe>/<metric>; an LLC estimate the sampler flags as unhealthy (and
    each of its chains) goes under llc/unhealthy/..., so that llc/mean never charts it as fine."""
    keys = rows["probe"] + "/" + rows["metric"]
    estimates = llc_estimates(rows)
    unhealthy = set(zip(*estimates.loc[estimates["healthy"] < 0.5, ["run", "step", "signal"]].to_numpy().T))
    estimate = (rows["probe"] == LLC_PROBE) & ((rows["role"] == STAGE_SIGNAL) | rows["sample"].notna())
    for i, row in rows[estimate].iterrows():
        if (row["run"], row["step"], llc_signal(row["layer"], row["head"])) in unhealthy:
            keys[i] = f"llc/unhealthy/{row['metric']}"
    return keys


def _summary_panels(table: pd.DataFrame, report) -> dict:
    """Tables, one line series per curve worth a panel (each task's headline and continuous
    metrics, and every curve with an onset), and the report's charts."""
    import wandb

    logged = {"results": wandb.Table(dataframe=_readable(table))}
    curves = {(task.probe, metric) for task in tasks(table) for metric in task.metrics}
    if report is not None:
        for name, key in (("emergence", "emergence"), ("emergence_map", "onsets_by_size"), ("stages", "stages")):
            logged[name] = wandb.Table(dataframe=_readable(report.tables[key]))
        emergence = report.tables["emergence"]
        curves |= set(emergence[emergence["has_onset"]][["probe", "metric"]].itertuples(index=False, name=None))
        logged |= {f"charts/{name}": wandb.Plotly(fig) for name, fig in report.charts.items()}
    logged |= {f"curves/{probe}/{metric}": _line_series(table, probe, metric) for probe, metric in sorted(curves)}
    return logged


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN as null, and every value a plain one (a W&B table column holds one type)."""
    frame = frame.reset_index(drop=True).astype(object)
    return frame.where(frame.notna(), None)


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
