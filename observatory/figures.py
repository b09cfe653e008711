"""The report's interactive charts, as plotly figures: per-task curves across sizes, the
mechanistic probes, attention heads and linear probes as heatmaps over steps, onset vs
compute. The page embeds plotly.js once (observatory/page.py); nothing is fetched.

Every chart's data traces carry `meta={"runs": [...]}`, the runs they draw, so a test (or a
reader of the page's figure JSON) can check that each chart shows every run."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, sample_colorscale
from plotly.subplots import make_subplots

from observatory.findings import count, metric_label
from observatory.stages import ED_PROBE
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
HEAD = re.compile(r"^(induction|prev_token)/L(\d+)H(\d+)$")
HEAD_SCORES = {"induction": "induction score", "prev_token": "previous-token score"}


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


def y_title(probe: str, metric: str, kind: str) -> str:
    """The metric with its unit."""
    if probe == "capability":
        name = metric.split("/")[-1].removeprefix("train_")
        unit = {"exact_match": "fraction of items", "agreement": "fraction of items", "token_accuracy": "fraction of tokens",
                "answer_logprob": "nats", "brier": "0–2, lower is better", "agreement_prob": "probability"}.get(name)
        label = metric_label(metric)
        return f"{label} ({unit})" if unit else label
    if probe == "attention":
        return f"{HEAD_SCORES.get(metric.split('/')[0], metric)} (attention weight)"
    if probe == "loss":
        return "ICL score (nats, late − early token loss)" if metric == "icl_score" else "held-out loss (nats per token)"
    if probe == "weights":
        return "weight norm (L2)"
    if probe == "linear":
        return "linear probe accuracy (fraction of items)"
    return {"accuracy": f"{metric} (fraction)", "logprob": f"{metric} (nats)", "loss": f"{metric} (nats)"}.get(kind, metric)


def panel_title(probe: str, metric: str) -> str:
    if probe == "capability":
        return f"{metric.split('/')[0]}: {metric_label(metric)}"
    return {("attention", "induction/max"): "strongest induction head",
            ("attention", "prev_token/max"): "strongest previous-token head",
            ("loss", "icl_score"): "in-context learning score", ("loss", "all"): "held-out loss",
            ("weights", "norm/total"): "weight norm, all parameters"}.get(
        (probe, metric), f"linear probe: {metric.split('/')[0]} (best layer)" if probe == "linear" else f"{probe}: {metric}")


class Curves:
    """The results, indexed by probe metric, with each size's runs and colour."""

    def __init__(self, results: pd.DataFrame, sizes: pd.DataFrame, by_size: pd.DataFrame):
        self.groups = {key: rows for key, rows in results.groupby(["probe", "metric"], sort=False)}
        self.probes = {probe: rows for probe, rows in results.groupby("probe", sort=False)}
        self.sizes = sizes
        self.colors = size_colors(list(sizes["model"]))
        self.by_size = by_size.set_index(["probe", "metric", "model"]) if len(by_size) else None
        self.max_step = float(results["step"].max())
        self.model_of = {run: model for model, runs in zip(sizes["model"], sizes["runs"]) for run in runs}

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
            name = self.label(size) + suffix
            fig.add_trace(go.Scatter(
                x=x, y=stats["mean"], customdata=steps, mode="lines+markers", name=name, showlegend=showlegend,
                line=dict(color=color, width=2, dash=dash), marker=dict(size=5, color=color),
                hovertemplate=f"{size.model}{suffix}<br>step %{{customdata:,}}<br>{metric_label(metric)}: %{{y:.3g}}"
                              f"{'<br>band: ' + band if band else ''}<extra></extra>",
                meta={"runs": runs}, **group), **where)
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

    def chance(self, fig, probe, metric, row=None, col=None) -> None:
        if (probe, metric) not in self.groups:
            return
        chance = self.groups[(probe, metric)]["chance"].dropna()
        if len(chance):
            fig.add_hline(y=float(chance.mean()), line=dict(color="#777", width=1.2, dash="dash"),
                          annotation=dict(text="chance", font=dict(size=12, color="#555")),
                          annotation_position="top left", **(dict(row=row, col=col) if row else {}))

    def accuracy_range(self, fig, probe, metric, **where) -> None:
        rows = self.groups.get((probe, metric))
        if rows is not None and rows["kind"].iloc[0] == "accuracy":
            fig.update_yaxes(range=[-0.03, 1.03], **where)


# ---- stage boundaries (the stages table of observatory/stages.py) ----------------------------
WHOLE_MODEL = ("llc", ED_PROBE)  # the signals drawn on every curve; a component's only on its LLC chart


def _band(fig, boundary, color, where: dict) -> None:
    fig.add_vrect(x0=pos(boundary.low_step), x1=pos(boundary.high_step), fillcolor=color, opacity=0.13, line_width=0,
                  layer="below", **where)
    fig.add_vline(x=pos(boundary.boundary_step), line=dict(color=color, width=1.2, dash="dot"), **where)


def add_stages(fig: go.Figure, curves: Curves, stages: pd.DataFrame | None, panels: list[tuple[int, int]]) -> list[str]:
    """Each whole-model stage boundary of a run as a band (low_step to high_step) in its size's
    colour and a dotted line at its step, on every panel; returns one caption entry per boundary."""
    drawn = []
    if stages is None or not len(stages):
        return drawn
    for s in stages[stages["signal"].isin(WHOLE_MODEL)].sort_values(["run", "boundary_step"]).itertuples():
        model = curves.model_of.get(s.run)
        if model is None:
            continue
        for row, col in panels:
            _band(fig, s, curves.colors[model], dict(row=row, col=col))
        drawn.append(f"{s.run}: step {count(s.boundary_step)} [{count(s.low_step)}–{count(s.high_step)}] ({s.signal})")
    return drawn


# ---- the figures ------------------------------------------------------------------------
def _finish(fig: go.Figure, name: str, height: int, legend_title: str | None = "model size") -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, meta={"chart": name},
                      legend=dict(title_text=legend_title) if legend_title else {})
    fig.update_annotations(font_size=14, selector=dict(xref="paper"))  # subplot titles
    return fig


def task_figure(task, curves: Curves, stages=None, trained: str | None = None) -> tuple[go.Figure, list[str]]:
    """The task's headline (discontinuous) metric beside its continuous one: one line per size,
    bands, chance, onsets, stage boundaries; `trained`: the trained items' twin of the headline
    metric, dashed, where its transition comes apart from the held-out one."""
    metrics = task.metrics
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.1,
                        subplot_titles=[panel_title("capability", m) for m in metrics])
    for col, metric in enumerate(metrics, 1):
        curves.add(fig, "capability", metric, 1, col, showlegend=col == 1)
        if trained and col == 1:
            curves.add(fig, "capability", trained, 1, col, dash="dot", suffix=", trained items", bands=False)
        curves.chance(fig, "capability", metric, 1, col)
        kind = curves.groups[("capability", metric)]["kind"].iloc[0]
        fig.update_yaxes(title_text=y_title("capability", metric, kind), row=1, col=col)
        curves.accuracy_range(fig, "capability", metric, row=1, col=col)
        step_axis(fig, curves.max_step, row=1, col=col)
    drawn = add_stages(fig, curves, stages, [(1, c) for c in range(1, len(metrics) + 1)])
    return _finish(fig, f"task {task.name}", 440), drawn


MECHANISM_PANELS = [("attention", "induction/max"), ("attention", "prev_token/max"), ("loss", "icl_score"),
                    ("loss", "all"), ("weights", "norm/total")]


def mechanism_panels(results: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(map(tuple, results[["probe", "metric"]].drop_duplicates().to_numpy()))
    linear = sorted(m for p, m in present if p == "linear" and m.endswith("/best"))
    return [p for p in MECHANISM_PANELS[:3] if p in present] + [("linear", m) for m in linear] + \
        [p for p in MECHANISM_PANELS[3:] if p in present]


def mechanism_figure(curves: Curves, panels: list[tuple[str, str]], stages=None) -> tuple[go.Figure, list[str]]:
    """Small multiples of the mechanistic curves (head scores, ICL score, linear probes, loss,
    weight norm), two to a row, one line per size."""
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.1, vertical_spacing=0.32 / rows + 0.04,
                        subplot_titles=[panel_title(p, m) for p, m in panels])
    places = []
    for i, (probe, metric) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        places.append((row, col))
        curves.add(fig, probe, metric, row, col, showlegend=i == 0)
        curves.chance(fig, probe, metric, row, col)
        kind = curves.groups[(probe, metric)]["kind"].iloc[0]
        fig.update_yaxes(title_text=y_title(probe, metric, kind), row=row, col=col)
        curves.accuracy_range(fig, probe, metric, row=row, col=col)
        step_axis(fig, curves.max_step, row=row, col=col)
    drawn = add_stages(fig, curves, stages, places)
    return _finish(fig, "mechanisms", 340 * rows + 40), drawn


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


def head_columns(results: pd.DataFrame) -> list[tuple[str, str, dict[str, str]]]:
    """[(title, "attention", {metric: "L0H1"})] for the head scores present, in layer-head order."""
    metrics = results.loc[results["probe"] == "attention", "metric"].unique()
    found = {}
    for m in metrics:
        match = HEAD.match(m)
        if match:
            found.setdefault(match[1], []).append((int(match[2]), int(match[3]), m))
    return [(HEAD_SCORES[score], "attention", {m: f"L{layer}H{head}" for layer, head, m in sorted(found[score])})
            for score in ("induction", "prev_token") if score in found]


def linear_columns(results: pd.DataFrame) -> list[tuple[str, str, dict[str, str]]]:
    """[(task, "linear", {metric: "layer 0"})]: each linear probe task's per-layer accuracies."""
    metrics = results.loc[results["probe"] == "linear", "metric"].unique()
    by_task = {}
    for m in metrics:
        task, where = m.split("/", 1)
        found = re.fullmatch(r"layer(\d+)", where)
        if found:
            by_task.setdefault(task, []).append((int(found[1]), m))
    return [(f"linear probe: {task}", "linear", {m: f"layer {i}" for i, m in sorted(layers)})
            for task, layers in sorted(by_task.items())]


def onset_compute_figure(curves: Curves, tasks: list, by_size: pd.DataFrame) -> go.Figure | None:
    """Onset vs compute, one panel per task with a transition: the training compute (6·N·D) at the
    onset of each size (diamonds, whiskers: the 95% interval), for the task's headline and
    continuous metrics; sizes with no transition as open triangles at the compute they were
    trained with (the onset, if any, comes later)."""
    sizes = curves.sizes.set_index("model")

    def flops(model, step):
        return flops_6nd(sizes.loc[model, "n_params_non_embedding"], sizes.loc[model, "tokens_per_step"] * step)

    shown = [t for t in tasks if by_size[by_size["metric"].isin(t.metrics) & by_size["has_onset"]].shape[0]]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all", horizontal_spacing=0.06,
                        vertical_spacing=0.16 / rows + 0.05,
                        subplot_titles=[f"{t.name}: {' vs '.join(metric_label(m) for m in t.metrics)}" for t in shown])
    roles = [("headline", "#1b3a8a", "diamond", 1), ("continuous", "#e07b00", "circle", 3)]
    legend = set()

    def once(name):  # each legend entry once, from the first panel that draws it
        first = name not in legend
        legend.add(name)
        return first

    for i, task in enumerate(shown):
        row, col = i // cols + 1, i % cols + 1
        for (role, color, symbol, rank), metric in zip(roles, task.metrics):
            table = by_size[(by_size["probe"] == "capability") & (by_size["metric"] == metric)].sort_values("n_params")
            hit, miss = table[table["has_onset"]], table[~table["has_onset"]]
            x = [sizes.loc[m, "n_params_non_embedding"] for m in hit["model"]]
            y = [flops(m, s) for m, s in zip(hit["model"], hit["onset_step"])]
            up = [flops(m, h) - v if pd.notna(h) else 0 for m, h, v in zip(hit["model"], hit["high"], y)]
            down = [v - flops(m, lo) if pd.notna(lo) else 0 for m, lo, v in zip(hit["model"], hit["low"], y)]
            label = f"{role} metric ({metric_label(metric)} here)"
            if len(hit):
                fig.add_trace(go.Scatter(
                    x=x, y=y, mode="lines+markers", name=f"{role} metric: onset", legendgroup=role,
                    showlegend=once(f"{role} metric: onset"), legendrank=rank,
                    marker=dict(symbol=symbol, size=11, color=color), line=dict(color=color, width=1.5),
                    error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, color=color, thickness=1.5, width=5),
                    customdata=np.stack([hit["model"], [count(s) for s in hit["onset_step"]]], axis=1),
                    hovertemplate=f"{label}<br>%{{customdata[0]}}: onset at step %{{customdata[1]}}"
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
                    hovertemplate=f"{label}<br>%{{customdata}}: no transition within %{{y:.3s}}FLOPs<extra></extra>",
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
    """Essential dynamics: the run's checkpoints in the first two principal components of its
    outputs, coloured by log step, the checkpoints around each turning point ringed."""
    if traj.coords.shape[1] < 2:
        return None
    x, y, steps = traj.coords[:, 0], traj.coords[:, 1], traj.steps
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", line=dict(color="#bbb", width=1), hoverinfo="skip",
                               showlegend=False))
    fig.add_trace(go.Scatter(
        x=x, y=y, customdata=steps, mode="markers", name="checkpoint", showlegend=False,
        marker=dict(size=8, color=np.log10(steps + 1), colorscale="Viridis",
                    colorbar=dict(title=dict(text="log10(step + 1)", side="right"), thickness=12)),
        hovertemplate="step %{customdata:,}<br>PC1 %{x:.3g}, PC2 %{y:.3g}<extra></extra>", meta={"runs": [run]}))
    mine = stages[(stages["run"] == run) & (stages["signal"] == ED_PROBE)] if stages is not None and len(stages) else []
    for j, b in enumerate(mine.itertuples() if len(mine) else []):
        inside = (steps >= b.low_step) & (steps <= b.high_step)
        fig.add_trace(go.Scatter(x=x[inside], y=y[inside], mode="markers", name="around a turning point",
                                 showlegend=j == 0, hoverinfo="skip",
                                 marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="#c0392b", width=2))))
    fig.update_xaxes(title_text=f"PC1 ({traj.explained[0]:.0%} of the variance)")
    fig.update_yaxes(title_text=f"PC2 ({traj.explained[1]:.0%})")
    fig.update_layout(legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))  # clear of the colour bar
    return _finish(fig, f"essential dynamics {run}", 420, legend_title=None)


def figure_runs(fig: go.Figure) -> set[str]:
    """The runs a figure draws (its traces' meta)."""
    return {run for trace in fig.data if isinstance(trace.meta, dict) for run in trace.meta.get("runs", [])}


