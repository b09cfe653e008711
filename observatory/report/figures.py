"""Every chart of the report, defined once as a plotly figure: the page embeds them
(observatory/report/page.py), W&B logs them as they are, and the docs' PNGs are the same
figures exported by kaleido (charts/*.png). So the page, the PNGs and W&B show one drawing
with the same numbers.

Per-task curves across sizes, small multiples of any curves, heatmaps of components and of
sizes over steps, onset vs compute, the LLC and the essential-dynamics trajectory. Every
chart's data traces carry `meta={"runs": [...]}`, the runs they draw, so a test (or a reader
of the page's figure JSON) can check that each chart shows every run."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import hex_to_rgb, sample_colorscale
from plotly.subplots import make_subplots

from observatory.analysis.emergence import headline_metrics
from observatory.analysis.stages import ED_PROBE
from observatory.analysis.tables import Task, comes_apart, metric_info
from observatory.metrics import (
    ALL_OR_NOTHING,
    CONTINUOUS,
    LOSS,
    MECHANISM,
    NGRAM,
    REPRESENTATION,
    WEIGHTS,
    component_name,
)
from observatory.report.format import axis_title, count, label, title
from observatory.store import flops_6nd

STEP0 = 0.5  # where step 0 (the initial weights) sits on the log step axis, labelled "0"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_AXIS = dict(showgrid=True, gridcolor="#e9e9e9", showline=True, linecolor="#999", ticks="outside", tickcolor="#999",
             zeroline=False, title_standoff=6)
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family=FONT, size=13, color="#222"), paper_bgcolor="white", plot_bgcolor="white",
    xaxis=_AXIS, yaxis=_AXIS, hoverlabel=dict(font_size=13), margin=dict(l=70, r=20, t=60, b=60),
    legend=dict(title_font_size=13, font_size=13, itemclick="toggle", itemdoubleclick="toggleothers"),
))


def pos(steps):
    """Steps as positions on the log step axis: step 0 at STEP0."""
    return np.maximum(np.asarray(steps, dtype=float), STEP0)


def size_colors(models: list[str]) -> dict[str, str]:
    """One colour per size, light-to-dark order by size (plasma, its pale end left out)."""
    points = [0.0] if len(models) == 1 else list(np.linspace(0.0, 0.78, len(models)))
    colors = sample_colorscale("Plasma", points, colortype="rgb")
    return dict(zip(models, colors))


def rgba(color: str, alpha: float) -> str:
    r, g, b = (hex_to_rgb(color) if color.startswith("#") else
               [int(float(c)) for c in color[color.index("(") + 1:-1].split(",")[:3]])
    return f"rgba({r},{g},{b},{alpha})"


def step_axis(fig: go.Figure, max_step: float, **where) -> None:
    """A log step axis that still shows step 0: ticks 0, 1, 10, 100, 1k, ..."""
    decades = 10.0 ** np.arange(0, math.ceil(math.log10(max(max_step, 10))) + 1)
    fig.update_xaxes(type="log", tickvals=[STEP0, *decades], ticktext=["0", *[count(d) for d in decades]],
                     range=[math.log10(STEP0) - 0.08, math.log10(max(max_step, 1)) + 0.06],
                     title_text="training step (log scale)", **where)


def run_models(sizes: pd.DataFrame) -> dict[str, str]:
    """run -> its model size, from the sizes table."""
    return {run: model for model, runs in zip(sizes["model"], sizes["runs"]) for run in runs}


class Curves:
    """The results, indexed by probe metric, with each size's runs and colour."""

    def __init__(self, results: pd.DataFrame, sizes: pd.DataFrame, by_size: pd.DataFrame,
                 suspect: pd.DataFrame | None = None):
        self.info = metric_info(results)  # (probe, metric) -> what it is: label, unit, kind, ...
        self.groups = {key: rows for key, rows in results.groupby(["probe", "metric"], sort=False)}
        self.probes = {probe: rows for probe, rows in results.groupby("probe", sort=False)}
        self.sizes = sizes
        self.colors = size_colors(list(sizes["model"]))
        self.by_size = by_size.set_index(["probe", "metric", "model"]) if len(by_size) else None
        self.max_step = float(results["step"].max())
        self.model_of = run_models(sizes)
        # revisions whose weights are another's, or off training's path (integrity.csv): marked, not in the lines
        self.suspect = {key: rows for key, rows in suspect.groupby(["probe", "metric"])} if suspect is not None else {}

    def label(self, size) -> str:
        seeds = len(size.runs)
        return f"{size.model} ({count(size.n_params)} params{f', {seeds} seeds' if seeds > 1 else ''})"

    def onset(self, probe, metric, model):
        if self.by_size is None or (probe, metric, model) not in self.by_size.index:
            return None
        row = self.by_size.loc[(probe, metric, model)]
        return row if row["has_onset"] else None

    def stats(self, probe, metric, runs) -> tuple[pd.DataFrame, str]:
        """Per step: the mean over the runs (seeds) and a band: the range over seeds, or for one
        run the 95% interval of its mean over probe items (±1.96 standard errors)."""
        rows = self.groups[(probe, metric)]
        rows = rows[rows["run"].isin(runs)]
        g = rows.groupby("step")
        stats = pd.DataFrame({"mean": g["value"].mean()})
        if rows["run"].nunique() > 1:
            stats["low"], stats["high"], band = g["value"].min(), g["value"].max(), "range over seeds"
        else:
            se = g["stderr"].mean()
            stats["low"], stats["high"], band = stats["mean"] - 1.96 * se, stats["mean"] + 1.96 * se, "95% interval over items"
            if not np.isfinite(se).any():
                band = ""
        low, high = rows["low"].iloc[0], rows["high"].iloc[0]
        stats["low"] = stats["low"].clip(lower=low if np.isfinite(low) else None)
        stats["high"] = stats["high"].clip(upper=high if np.isfinite(high) else None)
        return stats, band

    def add(self, fig, probe, metric, row=None, col=None, showlegend=True, dash=None, suffix="", bands=True) -> None:
        """One line per size (mean over seeds) with its band and its onset marked (a diamond at
        the onset, whiskers: its 95% interval)."""
        if (probe, metric) not in self.groups:
            return
        present = set(self.groups[(probe, metric)]["run"])
        where = dict(row=row, col=col) if row else {}
        for size in self.sizes.itertuples():
            runs = [r for r in size.runs if r in present]
            if not runs:
                continue
            color, stats_band = self.colors[size.model], self.stats(probe, metric, runs)
            stats, band = stats_band
            x, steps = pos(stats.index), stats.index.to_numpy()
            group = dict(legendgroup=size.model + suffix, hoverlabel=dict(namelength=-1))
            if bands and band:
                fig.add_trace(go.Scatter(x=x, y=stats["high"], mode="lines", line=dict(width=0), showlegend=False,
                                         hoverinfo="skip", **group), **where)
                fig.add_trace(go.Scatter(x=x, y=stats["low"], mode="lines", line=dict(width=0), fill="tonexty",
                                         fillcolor=rgba(color, 0.16), showlegend=False, hoverinfo="skip", **group), **where)
            name, what = self.label(size) + suffix, label(self.info.loc[(probe, metric)])
            fig.add_trace(go.Scatter(
                x=x, y=stats["mean"], customdata=steps, mode="lines+markers", name=name, showlegend=showlegend,
                line=dict(color=color, width=2, dash=dash), marker=dict(size=5, color=color),
                hovertemplate=f"{size.model}{suffix}<br>step %{{customdata:,}}<br>{what}: %{{y:.3g}}"
                              f"{'<br>band: ' + band if band else ''}<extra></extra>",
                meta={"runs": runs}, **group), **where)
            self.mark_suspect(fig, probe, metric, runs, color, group, where)
            onset = self.onset(probe, metric, size.model)
            if onset is not None:
                step = float(onset["onset_step"])
                y = float(np.interp(np.log10(pos(step)), np.log10(x), stats["mean"].to_numpy()))
                low, high = onset["low"], onset["high"]
                has_ci = low is not None and high is not None and np.isfinite(low) and np.isfinite(high)
                fig.add_trace(go.Scatter(
                    x=[pos(step)], y=[y], mode="markers", showlegend=False,
                    marker=dict(symbol="diamond-open" if dash else "diamond", size=13, color=color,
                                line=dict(color=color if dash else "white", width=2 if dash else 1.5)),
                    error_x=dict(type="data", symmetric=False, array=[pos(high) - pos(step)], arrayminus=[pos(step) - pos(low)],
                                 color=color, thickness=2, width=6) if has_ci else None,
                    hovertemplate=f"{size.model}{suffix}: onset at step {count(step)}"
                                  + (f" [{count(low)}–{count(high)}], 95% interval over {onset['interval']}" if has_ci else "")
                                  + "<extra></extra>", **group), **where)

    def mark_suspect(self, fig, probe, metric, runs, color, group, where) -> None:
        """The suspect revisions' values as crosses beside the line, left out of it and of onsets."""
        rows = self.suspect.get((probe, metric))
        rows = rows[rows["run"].isin(runs)] if rows is not None else None
        if rows is None or not len(rows):
            return
        fig.add_trace(go.Scatter(
            x=pos(rows["step"]), y=rows["value"], customdata=rows["step"], mode="markers", showlegend=False,
            marker=dict(symbol="x-thin-open", size=10, color=color, line=dict(width=2, color=color)),
            hovertemplate="step %{customdata:,}: a suspect revision (integrity.csv), not in the curve<extra></extra>",
            **group), **where)

    def chance(self, fig, probe, metric, row=None, col=None) -> None:
        if (probe, metric) not in self.groups:
            return
        chance = self.groups[(probe, metric)]["chance"].dropna()
        if len(chance):
            fig.add_hline(y=float(chance.mean()), line=dict(color="#777", width=1.2, dash="dash"),
                          annotation=dict(text="chance", font=dict(size=12, color="#555")),
                          annotation_position="top left", **(dict(row=row, col=col) if row else {}))

    def axes(self, fig, probe, metric, row, col) -> None:
        """The panel's value axis and step axis."""
        value_axis(fig, self.info.loc[(probe, metric)], row, col)
        step_axis(fig, self.max_step, row=row, col=col)


def value_axis(fig: go.Figure, info, row: int, col: int) -> None:
    """A panel's value axis: its metric and unit; 0 to 1 for an accuracy."""
    fig.update_yaxes(title_text=axis_title(info), row=row, col=col)
    if info["kind"] == "accuracy":
        fig.update_yaxes(range=[-0.03, 1.03], row=row, col=col)


def panel_grid(curves: Curves, panels: list[tuple[str, str]], cols: int, horizontal_spacing: float,
               vertical_margin: float) -> tuple[go.Figure, int]:
    """Small multiples, `cols` to a row, each titled by its metric: (figure, number of rows)."""
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=horizontal_spacing,
                        vertical_spacing=0.32 / rows + vertical_margin,
                        subplot_titles=[title(curves.info.loc[p]) for p in panels])
    return fig, rows


# ---- stage boundaries (the stages table of observatory/analysis/stages.py) ----------------------------
WHOLE_MODEL = ("llc", ED_PROBE)  # the signals drawn on every curve; a component's only on its LLC chart


def _band(fig, boundary, color, where: dict) -> None:
    fig.add_vrect(x0=pos(boundary.low_step), x1=pos(boundary.high_step), fillcolor=color, opacity=0.13, line_width=0,
                  layer="below", **where)
    fig.add_vline(x=pos(boundary.boundary_step), line=dict(color=color, width=1.2, dash="dot"), **where)


def add_stages(fig: go.Figure, curves: Curves, stages: pd.DataFrame | None, panels: list[tuple[int, int]]) -> None:
    """Each whole-model stage boundary of a run as a band (low_step to high_step) in its size's
    colour and a dotted line at its step, on every panel."""
    for s in _whole_model(curves.model_of, stages):
        for row, col in panels:
            _band(fig, s, curves.colors[curves.model_of[s.run]], dict(row=row, col=col))


def stage_captions(model_of: dict[str, str], stages: pd.DataFrame | None) -> list[str]:
    """One caption entry per boundary that `add_stages` draws."""
    return [f"{s.run}: step {count(s.boundary_step)} [{count(s.low_step)}–{count(s.high_step)}] ({s.signal})"
            for s in _whole_model(model_of, stages)]


def _whole_model(model_of: dict[str, str], stages: pd.DataFrame | None) -> list:
    if stages is None or not len(stages):
        return []
    mine = stages[stages["signal"].isin(WHOLE_MODEL) & stages["run"].isin(list(model_of))]
    return list(mine.sort_values(["run", "boundary_step"]).itertuples())


# ---- the figures ------------------------------------------------------------------------
def _finish(fig: go.Figure, name: str, height: int, legend_title: str | None = "model size") -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, meta={"chart": name},
                      legend=dict(title_text=legend_title) if legend_title else {})
    fig.update_annotations(font_size=14, selector=dict(xref="paper"))  # subplot titles
    return fig


def panels_figure(curves: Curves, panels: list[tuple[str, str]], name: str, stages=None, cols: int = 2,
                  height: int | None = None, trained: dict[int, tuple[str, str]] | None = None) -> go.Figure:
    """Small multiples of curves (`cols` to a row), one line per size with its band, chance and
    onsets, the stage boundaries shaded; `trained`: {panel: the curve on trained items}, dotted,
    in that panel."""
    cols = min(cols, len(panels))
    fig, rows = panel_grid(curves, panels, cols, 0.1 if cols < 3 else 0.13, 0.04)
    places = []
    for i, (probe, metric) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        places.append((row, col))
        curves.add(fig, probe, metric, row, col, showlegend=i == 0)
        if i in (trained or {}):
            curves.add(fig, *trained[i], row, col, dash="dot", suffix=", trained items", bands=False)
        curves.chance(fig, probe, metric, row, col)
        curves.axes(fig, probe, metric, row, col)
    add_stages(fig, curves, stages, places)
    return _finish(fig, name, height or 340 * rows + 40)


def task_figure(task: Task, curves: Curves, stages=None, trained: bool = False) -> go.Figure:
    """The task's headline (all-or-nothing) metric beside its continuous one: one line per size,
    bands, chance, onsets, stage boundaries; `trained`: the headline metric on trained items,
    dotted, where its transition comes apart from the held-out one."""
    panels = [(task.probe, m) for m in task.metrics]
    twin = {0: (task.probe, task.trained)} if trained and task.trained else None
    return panels_figure(curves, panels, f"task {task.name}", stages, cols=len(panels), height=440, trained=twin)


MECHANISM_ROLES = (MECHANISM, REPRESENTATION, LOSS, WEIGHTS)  # in the order the page shows them


def mechanism_panels(results: pd.DataFrame) -> list[tuple[str, str]]:
    """The primary curve of each mechanistic probe: the strongest heads, the ICL score, the best
    linear probe per task, the held-out loss, the weight norm."""
    info = metric_info(results)
    chosen = info[info["role"].isin(MECHANISM_ROLES) & info["primary"].astype(bool)]
    order = {role: i for i, role in enumerate(MECHANISM_ROLES)}
    return sorted(chosen.index, key=lambda key: (order[chosen.loc[key, "role"]], key))


def _grid(rows: pd.DataFrame, runs: list[str], labels: dict[str, str]) -> pd.DataFrame:
    """Components (rows, in `labels` order) × steps: the mean over the runs."""
    rows = rows[rows["run"].isin(runs) & rows["metric"].isin(list(labels))]
    grid = rows.groupby(["metric", "step"])["value"].mean().unstack("step")
    return grid.reindex([m for m in labels if m in grid.index])


def heatmap_figure(curves: Curves, columns: list[tuple[str, str, dict[str, str]]], name: str,
                   colorbar: str) -> go.Figure:
    """Small multiples of component × step heatmaps: one row per size, one column per group of
    components (columns: [(title, probe, {metric: component label})]); one shared colour scale."""
    sizes = list(curves.sizes.itertuples())
    per_size = []
    for size in sizes:
        grids = []
        for _title, probe, labels in columns:
            rows = curves.probes[probe]
            present = [r for r in size.runs if r in set(rows["run"])]
            grids.append((_grid(rows, present, labels), present))
        per_size.append(grids)
    heights = [max(1, max(len(g) for g, _ in grids)) for grids in per_size]
    fig = make_subplots(rows=len(sizes), cols=len(columns), row_heights=heights, shared_xaxes=True,
                        horizontal_spacing=0.08, vertical_spacing=min(0.08, 0.5 / max(len(sizes), 1)),
                        subplot_titles=[f"{size.model}: {title}" for size in sizes for title, _, _ in columns])
    for r, (size, grids) in enumerate(zip(sizes, per_size), 1):
        for c, ((grid, present), (_title, _probe, labels)) in enumerate(zip(grids, columns), 1):
            if not len(grid):
                continue
            steps = [str(int(s)) for s in grid.columns]
            fig.add_trace(go.Heatmap(
                x=steps, y=[labels[m] for m in grid.index], z=grid.to_numpy(), coloraxis="coloraxis",
                hovertemplate=f"{size.model} %{{y}}<br>step %{{x}}<br>{colorbar}: %{{z:.3g}}<extra></extra>",
                meta={"runs": present}, xgap=1, ygap=1), row=r, col=c)
            fig.update_yaxes(autorange="reversed", showgrid=False, row=r, col=c)
            fig.update_xaxes(type="category", showgrid=False, nticks=12, row=r, col=c)
    for c in range(1, len(columns) + 1):
        fig.update_xaxes(title_text="training step (checkpoints, evenly spaced)", row=len(sizes), col=c)
    specs = pd.concat([curves.probes[probe] for _, probe, _ in columns])[["low", "high"]]
    low, high = specs["low"].min(), specs["high"].max()
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=low if np.isfinite(low) else None,
                                     cmax=high if np.isfinite(high) else None,
                                     colorbar=dict(title=dict(text=colorbar, side="right"), thickness=14)))
    return _finish(fig, name, 90 + sum(22 * h + 55 for h in heights), legend_title=None)


def component_columns(results: pd.DataFrame, role: str, by: str) -> list[tuple[str, str, dict[str, str]]]:
    """[(title, probe, {metric: component})]: the per-component metrics of `role`, one group per
    value of `by` (a head score's label, a linear probe's task), in layer-head order."""
    info = metric_info(results)
    mine = info[(info["role"] == role) & info["layer"].notna()].reset_index()
    columns = []
    for key, group in mine.groupby(by, sort=False):
        group = group.sort_values(["layer", "head"], na_position="first")
        where = {m: component_name(layer, head) if role == MECHANISM else f"layer {layer}"
                 for m, layer, head in zip(group["metric"], group["layer"], group["head"])}
        columns.append((key if role == MECHANISM else f"linear probe: {key}", group["probe"].iloc[0], where))
    return columns


def size_step_figure(curves: Curves, probe: str, metric: str) -> go.Figure:
    """A curve as sizes × steps (mean over seeds): where in scale and training it turns on."""
    rows = curves.groups[(probe, metric)]
    grid = rows.groupby(["model", "step"])["value"].mean().unstack("step")
    grid = grid.reindex([m for m in curves.sizes["model"] if m in grid.index])
    info = curves.info.loc[(probe, metric)]
    fig = go.Figure(go.Heatmap(
        x=[str(int(s)) for s in grid.columns], y=list(grid.index), z=grid.to_numpy(), colorscale="Viridis",
        colorbar=dict(title=dict(text=label(info), side="right"), thickness=12), xgap=1, ygap=1,
        hovertemplate="%{y}<br>step %{x}<br>%{z:.3g}<extra></extra>", meta={"runs": sorted(set(rows["run"]))}))
    fig.update_xaxes(type="category", nticks=12, title_text="training step (checkpoints, evenly spaced)")
    fig.update_yaxes(title_text="model size", autorange="reversed")  # smallest on top, as in the map
    fig.update_layout(title_text=f"{title(info)}: size × step")
    return _finish(fig, f"heatmap {probe}/{metric}", 120 + 45 * len(grid), legend_title=None)


def size_axis_figure(curves: Curves, panels: list[tuple[str, str]], name: str) -> go.Figure:
    """Schaeffer et al. (2023)'s view of the mirage: each metric at the end of training against
    model size (log axis), the mean over seeds with whiskers over their range. An all-or-nothing
    metric that stays at its floor and then jumps looks like emergence at a threshold size; the
    continuous metrics of the same answers show how steadily the sizes improve."""
    cols = min(3, len(panels))
    fig, rows = panel_grid(curves, panels, cols, 0.13, 0.06)
    for i, (probe, metric) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        info = curves.info.loc[(probe, metric)]
        final = curves.groups[(probe, metric)].sort_values("step").groupby("run").tail(1).set_index("run")["value"]
        points = [(size, final.reindex(size.runs).dropna()) for size in curves.sizes.itertuples()]
        points = [(size, values) for size, values in points if len(values)]
        x = [size.n_params_non_embedding for size, _ in points]
        mean = np.array([values.mean() for _, values in points])
        color = "#1b3a8a" if info["role"] == ALL_OR_NOTHING else "#e07b00"
        fig.add_trace(go.Scatter(
            x=x, y=mean, mode="lines+markers", showlegend=False, line=dict(color=color, width=2),
            marker=dict(size=10, color=color, symbol="diamond" if info["role"] == ALL_OR_NOTHING else "circle"),
            error_y=dict(type="data", symmetric=False, color=color, thickness=1.5, width=5,
                         array=[values.max() - m for (_, values), m in zip(points, mean)],
                         arrayminus=[m - values.min() for (_, values), m in zip(points, mean)]),
            customdata=[f"{size.model}, {len(values)} seed{'s' if len(values) > 1 else ''}" for size, values in points],
            hovertemplate=f"%{{customdata}}<br>{label(info)} at the end: %{{y:.3g}}<extra></extra>",
            meta={"runs": [r for size, values in points for r in values.index]}), row=row, col=col)
        fig.update_xaxes(type="log", exponentformat="SI", title_text="parameters (non-embedding)", row=row, col=col)
        value_axis(fig, info, row, col)
        curves.chance(fig, probe, metric, row, col)
    fig.update_layout(title_text=f"{name}: the end of training against model size (whiskers: range over seeds)")
    return _finish(fig, f"size axis {name}", 340 * rows + 60, legend_title=None)


def onset_compute_figure(curves: Curves, tasks: list[Task], by_size: pd.DataFrame) -> go.Figure | None:
    """Onset vs compute, one panel per task with a transition: the training compute (6·N·D) at the
    onset of each size (diamonds, whiskers: the 95% interval), for the task's headline and
    continuous metrics; sizes with no transition as open triangles at the compute they were
    trained with (the onset, if any, comes later)."""
    sizes = curves.sizes.set_index("model")

    def metric_name(task, metric):
        return label(curves.info.loc[(task.probe, metric)])

    def flops(model, step):
        return flops_6nd(sizes.loc[model, "n_params_non_embedding"], sizes.loc[model, "tokens_per_step"] * step)

    shown = [t for t in tasks if by_size[by_size["metric"].isin(t.metrics) & by_size["has_onset"]].shape[0]]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all", horizontal_spacing=0.06,
                        vertical_spacing=0.16 / rows + 0.05,
                        subplot_titles=[f"{t.name}: {' vs '.join(metric_name(t, m) for m in t.metrics)}" for t in shown])
    roles = [("headline", "#1b3a8a", "diamond", 1), ("continuous", "#e07b00", "circle", 3)]
    legend = set()

    def once(name):  # each legend entry once, from the first panel that draws it
        first = name not in legend
        legend.add(name)
        return first

    for i, task in enumerate(shown):
        row, col = i // cols + 1, i % cols + 1
        for (role, color, symbol, rank), metric in zip(roles, task.metrics):
            table = by_size[(by_size["probe"] == task.probe) & (by_size["metric"] == metric)].sort_values("n_params")
            hit, miss = table[table["has_onset"]], table[~table["has_onset"]]
            x = [sizes.loc[m, "n_params_non_embedding"] for m in hit["model"]]
            y = [flops(m, s) for m, s in zip(hit["model"], hit["onset_step"])]
            up = [flops(m, h) - v if pd.notna(h) else 0 for m, h, v in zip(hit["model"], hit["high"], y)]
            down = [v - flops(m, lo) if pd.notna(lo) else 0 for m, lo, v in zip(hit["model"], hit["low"], y)]
            what = f"{role} metric ({metric_name(task, metric)} here)"
            if len(hit):
                fig.add_trace(go.Scatter(
                    x=x, y=y, mode="lines+markers", name=f"{role} metric: onset", legendgroup=role,
                    showlegend=once(f"{role} metric: onset"), legendrank=rank,
                    marker=dict(symbol=symbol, size=11, color=color), line=dict(color=color, width=1.5),
                    error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, color=color, thickness=1.5, width=5),
                    customdata=np.stack([hit["model"], [count(s) for s in hit["onset_step"]]], axis=1),
                    hovertemplate=f"{what}<br>%{{customdata[0]}}: onset at step %{{customdata[1]}}"
                                  "<br>%{y:.3s}FLOPs<extra></extra>",
                    meta={"runs": [r for runs in hit["runs"] for r in runs]}), row=row, col=col)
            if len(miss):
                name = f"{role} metric: no transition by the end of training"
                fig.add_trace(go.Scatter(
                    x=[sizes.loc[m, "n_params_non_embedding"] for m in miss["model"]],
                    y=[flops(m, sizes.loc[m, "final_step"]) for m in miss["model"]], mode="markers",
                    name=name, legendgroup=f"{role}-none", showlegend=once(name), legendrank=rank + 1,
                    marker=dict(symbol="triangle-up-open", size=11, color=color, line_width=2),
                    customdata=list(miss["model"]),
                    hovertemplate=f"{what}<br>%{{customdata}}: no transition within %{{y:.3s}}FLOPs<extra></extra>",
                    meta={"runs": [r for runs in miss["runs"] for r in runs]}), row=row, col=col)
    fig.update_xaxes(type="log", exponentformat="SI", showticklabels=True)
    fig.update_yaxes(type="log", exponentformat="SI")
    for c in range(1, cols + 1):
        fig.update_xaxes(title_text="parameters (non-embedding)", row=rows, col=c)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text="compute at onset (FLOPs, 6·N·D)", row=r, col=1)
    height = 320 * rows + 130
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-80 / (height - 170), x=0, xanchor="left"),
                      margin=dict(b=110))
    return _finish(fig, "onset vs compute", height, legend_title=None)


def llc_figure(run: str, llc: dict, stages: pd.DataFrame | None, max_step: float) -> go.Figure:
    """A run's LLC (mean over chains, whiskers: standard error) and, beside it, its components';
    estimates the sampler flags as unhealthy are red crosses, not points of the curve; the
    run's stage boundaries of each signal shaded."""
    signals = [sig for r, sig in llc if r == run]
    panels = [["llc"]] + ([[s for s in signals if s != "llc"]] if len(signals) > 1 else [])
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.1,
                        subplot_titles=["whole model", "components"][: len(panels)])
    palette = sample_colorscale("Viridis", list(np.linspace(0, 0.85, max(len(signals) - 1, 1))), colortype="rgb")
    flagged = False
    for col, panel in enumerate(panels, 1):
        for i, signal in enumerate(panel):
            curve = llc[(run, signal)]
            good, bad = curve[curve["healthy"]], curve[~curve["healthy"]]
            color = "#222" if signal == "llc" else palette[i % len(palette)]
            name = "LLC" if signal == "llc" else signal.removeprefix("llc/")
            fig.add_trace(go.Scatter(
                x=pos(good.index), y=good["mean"], customdata=good.index, mode="lines+markers", name=name,
                line=dict(color=color, width=2), marker=dict(size=5, color=color),
                error_y=dict(type="data", array=good["stderr"], color=color, thickness=1, width=3),
                hovertemplate=f"{name}<br>step %{{customdata:,}}<br>LLC %{{y:.4g}}<extra></extra>", meta={"runs": [run]}),
                row=1, col=col)
            if len(bad):
                fig.add_trace(go.Scatter(
                    x=pos(bad.index), y=bad["mean"], customdata=bad.index, mode="markers", name="unhealthy estimate",
                    legendgroup="unhealthy", showlegend=not flagged, marker=dict(symbol="x", size=9, color="#c0392b"),
                    hovertemplate=f"{name}<br>step %{{customdata:,}}: unhealthy, not an estimate<extra></extra>"),
                    row=1, col=col)
                flagged = True
        for s in (stages[(stages["run"] == run) & stages["signal"].isin(panel)].itertuples()
                  if stages is not None and len(stages) else []):
            _band(fig, s, "#7b3fa0", dict(row=1, col=col))
        fig.update_yaxes(title_text="LLC estimate (dimensionless)", row=1, col=col)
        step_axis(fig, max_step, row=1, col=col)
    return _finish(fig, f"llc {run}", 400, legend_title=None)


def trajectory_figure(run: str, traj, stages: pd.DataFrame | None) -> go.Figure | None:
    """Essential dynamics: the run's checkpoints in the first principal components of its outputs
    (PC2 and, where there is one, PC3 against PC1), coloured by log step; the checkpoints around
    each turning point ringed, and they, the first and the last labelled with their step."""
    k = traj.coords.shape[1]
    if k < 2:
        return None
    pairs = [(0, 1), (0, 2)] if k >= 3 else [(0, 1)]
    steps = traj.steps
    mine = stages[(stages["run"] == run) & (stages["signal"] == ED_PROBE)] if stages is not None and len(stages) else []
    turns = [(steps >= b.low_step) & (steps <= b.high_step) for b in (mine.itertuples() if len(mine) else [])]
    labelled = np.zeros(len(steps), dtype=bool)
    labelled[[0, -1]] = True
    for inside in turns:
        labelled |= inside
    fig = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.08)
    for col, (a, b) in enumerate(pairs, 1):
        x, y = traj.coords[:, a], traj.coords[:, b]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color="#bbb", width=1), hoverinfo="skip",
                                 showlegend=False), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=x, y=y, customdata=steps, mode="markers+text", name="checkpoint", showlegend=False, cliponaxis=False,
            text=[f"{s:.0f}" if on else "" for s, on in zip(steps, labelled)], textposition="top right",
            textfont=dict(size=10, color="#555"),
            marker=dict(size=8, color=np.log10(steps + 1), colorscale="Viridis", coloraxis=None, showscale=col == 1,
                        colorbar=dict(title=dict(text="log10(step + 1)", side="right"), thickness=12)),
            hovertemplate=f"step %{{customdata:,}}<br>PC{a + 1} %{{x:.3g}}, PC{b + 1} %{{y:.3g}}<extra></extra>",
            meta={"runs": [run]}), row=1, col=col)
        for j, inside in enumerate(turns):
            fig.add_trace(go.Scatter(x=x[inside], y=y[inside], mode="markers", name="around a turning point",
                                     showlegend=j == 0 and col == 1, hoverinfo="skip",
                                     marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="#c0392b", width=2))),
                          row=1, col=col)
        fig.update_xaxes(title_text=f"PC{a + 1} ({traj.explained[a]:.0%} of the variance)", row=1, col=col)
        fig.update_yaxes(title_text=f"PC{b + 1} ({traj.explained[b]:.0%})", row=1, col=col)
    fig.update_layout(legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))  # clear of the colour bar
    return _finish(fig, f"essential dynamics {run}", 440, legend_title=None)


def figure_runs(fig: go.Figure) -> set[str]:
    """The runs a figure draws (its traces' meta)."""
    return {run for trace in fig.data if isinstance(trace.meta, dict) for run in trace.meta.get("runs", [])}




# ---- every chart of a report, and their static images ----------------------------------------
def statistics_figure(run: str, everything: pd.DataFrame, minima: pd.DataFrame, stages: pd.DataFrame | None,
                      max_step: float) -> go.Figure:
    """A run's distance from n-gram statistics over training: the KL to each order's n-gram
    model of the training stream (left) and to the document's own in-context estimates (right),
    each curve's minimum ringed, the run's whole-model stage boundaries shaded."""
    rows = everything[(everything["run"] == run) & (everything["role"] == NGRAM)]
    panels = [("training stream", rows[rows["metric"].str.startswith("kl/")]),
              ("the document itself", rows[rows["metric"].str.startswith("icl_kl/")])]
    panels = [(name, p) for name, p in panels if len(p)]
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.1, subplot_titles=[n for n, _ in panels])
    palette = sample_colorscale("Viridis", [0.0, 0.45, 0.8, 0.95], colortype="rgb")
    for col, (_, panel) in enumerate(panels, 1):
        for i, (metric, curve) in enumerate(panel.groupby("metric", sort=True)):
            curve, color = curve.sort_values("step"), palette[i % len(palette)]
            name = str(curve["label"].iloc[0]).removeprefix("KL to the ")
            fig.add_trace(go.Scatter(
                x=pos(curve["step"]), y=curve["value"], customdata=curve["step"], mode="lines+markers", name=name,
                line=dict(color=color, width=2), marker=dict(size=4, color=color),
                error_y=dict(type="data", array=curve["stderr"], color=color, thickness=1, width=2),
                hovertemplate=f"{name}<br>step %{{customdata:,}}<br>KL %{{y:.4g}} nats<extra></extra>", meta={"runs": [run]}),
                row=1, col=col)
            low = minima[(minima["run"] == run) & (minima["metric"] == metric)]
            if len(low):
                m = low.iloc[0]
                fig.add_trace(go.Scatter(
                    x=pos([m["min_step"]]), y=[m["min_value"]], mode="markers", showlegend=False,
                    marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color=color, width=2.5)),
                    hovertemplate=f"{name}: lowest at step {count(m['min_step'])}<extra></extra>"), row=1, col=col)
        for s in (stages[(stages["run"] == run) & stages["signal"].isin(WHOLE_MODEL)].itertuples()
                  if stages is not None and len(stages) else []):
            _band(fig, s, "#7b3fa0", dict(row=1, col=col))
        fig.update_yaxes(title_text="KL(n-gram ‖ model), nats", rangemode="tozero", row=1, col=col)
        step_axis(fig, max_step, row=1, col=col)
    return _finish(fig, f"statistics {run}", 420, legend_title=None)


def report_charts(results: pd.DataFrame, sizes: pd.DataFrame, by_size: pd.DataFrame, tasks: list[Task],
                  mirage: pd.DataFrame, stages: pd.DataFrame | None, llc: dict, trajectories: dict,
                  everything: pd.DataFrame | None = None, minima: pd.DataFrame | None = None,
                  suspect: pd.DataFrame | None = None) -> dict[str, go.Figure]:
    """{file stem: figure}: each chart once. The page shows the task, mechanism, heads, linear,
    onset-vs-compute, LLC and trajectory charts; the curve, mirage, generalization and size ×
    step charts are for the docs and W&B."""
    curves = Curves(results, sizes, by_size, suspect)
    moving = set(map(tuple, by_size.loc[by_size["has_onset"].astype(bool), ["probe", "metric"]].to_numpy())) \
        if len(by_size) else set()
    charts = {}
    for task in tasks:
        charts[f"task-{task.name}"] = task_figure(task, curves, stages, trained=bool(comes_apart(by_size, task)))
    panels = [p for p in mechanism_panels(results) if p in moving]
    if panels:
        charts["mechanisms"] = panels_figure(curves, panels, "mechanisms", stages)
    for key, role, by, colorbar in (("heads", MECHANISM, "label", "attention score"),
                                    ("linear", REPRESENTATION, "task", "accuracy")):
        columns = component_columns(results, role, by)
        if columns:
            charts[key] = heatmap_figure(curves, columns, "attention heads" if key == "heads" else "linear probes",
                                         colorbar)
    compute = onset_compute_figure(curves, tasks, by_size) if len(sizes) > 1 else None
    if compute is not None:
        charts["onset-vs-compute"] = compute
    for probe, metric in headline_metrics(results):
        slug = f"{probe}-{metric}".replace("/", "-")
        charts[f"curve-{slug}"] = panels_figure(curves, [(probe, metric)], f"curve {probe}/{metric}", stages)
        if len(sizes) > 1 and curves.info.loc[(probe, metric), "role"] in (ALL_OR_NOTHING, CONTINUOUS):
            charts[f"heatmap-{slug}"] = size_step_figure(curves, probe, metric)
    info = curves.info
    norm = list(info.index[(info["role"] == WEIGHTS) & info["primary"].astype(bool)])  # the whole model's norm
    for task in tasks:
        compared = [(task.probe, m) for m in [*task.metrics, *task.others]  # held-out items: the mirage question's
                    if curves.info.loc[(task.probe, m), "split"] == "heldout"]
        if len(mirage) and task.name in set(mirage["task"]):
            charts[f"mirage-{task.name}"] = panels_figure(curves, compared, f"mirage {task.name}", cols=3)
            if len(sizes) > 1:
                charts[f"mirage-size-{task.name}"] = size_axis_figure(curves, compared, task.name)
        if task.trained:  # grokking's picture: trained vs held-out items, beside the weight norm
            charts[f"generalization-{task.name}"] = panels_figure(
                curves, [(task.probe, task.headline), *norm], f"generalization {task.name}", stages,
                trained={0: (task.probe, task.trained)})
    for run in sorted({r for r, _ in llc}):
        charts[f"llc-{run}"] = llc_figure(run, llc, stages, curves.max_step)
    for run, traj in sorted(trajectories.items()):
        fig = trajectory_figure(run, traj, stages)
        if fig is not None:
            charts[f"essential-dynamics-{run}"] = fig
    for run in sorted(set(minima["run"])) if minima is not None and len(minima) else []:
        charts[f"statistics-{run}"] = statistics_figure(run, everything, minima, stages, curves.max_step)
    return charts


def write_images(charts: dict[str, go.Figure], folder: Path) -> tuple[list[Path], str | None]:
    """The charts as PNG files (kaleido, through a local Chrome or Chromium), and why not where
    none can be made: (files written, reason or None). The page and W&B need no images."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in charts]
    for name in ("kaleido", "choreographer"):  # a line per tab and temporary folder at INFO: not the user's news
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        figures = list(charts.values())
        pio.write_images(figures, paths, width=1100, height=[f.layout.height or 450 for f in figures], scale=1)
    except (RuntimeError, OSError, ValueError) as e:  # no browser to draw in: the page and W&B need no images
        for path in paths:
            path.unlink(missing_ok=True)
        why = f"{type(e).__name__}: {e}".splitlines()[0].rstrip(": ")
        return [], f"no PNG charts ({why}); kaleido draws them in Chrome or Chromium (e.g. apt install chromium)"
    return paths, None
