"""index.html: one self-contained page that answers "what emerged, when, at which size" at a
glance. The headline (plain words from the tables), the emergence map (tasks × sizes), one
section per task, the mechanistic probes, onset vs compute, then the tables (sortable and
filterable, each also a CSV file beside the page). Charts are plotly figures; plotly.js is
embedded once, inline, so the page opens from a file with nothing fetched."""

from __future__ import annotations

import dataclasses
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs

from observatory import figures as F
from observatory.findings import (
    Finding,
    absent_text,
    count,
    interval,
    metric_label,
    mirage_text,
    size_onset_text,
    tasks,
    trained_gap,
    trained_text,
    value,
)

CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"],
          "toImageButtonOptions": {"format": "png", "scale": 2}}
esc = html.escape


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-")


@dataclass
class Page:
    """What the page is built from: the results and the tables written beside it."""
    experiment: str
    results: pd.DataFrame
    emergence: pd.DataFrame
    scale: pd.DataFrame
    mirage: pd.DataFrame
    over_seeds: pd.DataFrame
    by_size: pd.DataFrame
    sizes: pd.DataFrame
    found: list[Finding]  # the headline's findings (observatory/findings.py), also written as headline.txt
    stages: pd.DataFrame | None = None  # observatory/stages.py: boundaries and the onsets near them
    stage_onsets: pd.DataFrame | None = None
    llc_unhealthy: pd.DataFrame | None = None
    llc: dict = dataclasses.field(default_factory=dict)  # (run, signal) -> LLC curve
    trajectories: dict = dataclasses.field(default_factory=dict)  # run -> essential-dynamics Trajectory


class Charts:
    """Plotly figures as HTML fragments, numbered in page order."""

    def __init__(self):
        self.n = 0

    def __call__(self, fig) -> str:
        self.n += 1
        return ('<div class="chart">' + pio.to_html(fig, include_plotlyjs=False, full_html=False, config=CONFIG,
                                                     div_id=f"chart-{self.n}", default_height=f"{fig.layout.height}px")
                + "</div>")


# ---- pieces -----------------------------------------------------------------------------------
def facts(page: Page) -> str:
    r, sizes = page.results, page.sizes
    seeds = sorted({len(s) for s in sizes["seeds"]})
    last = r.sort_values("step").groupby("run").tail(1)
    steps = sorted(set(last["step"]))
    per_run = r.groupby("run")["step"].nunique()
    parts = [f"{r['run'].nunique()} run{'s' if r['run'].nunique() > 1 else ''}: "
             + (f"{len(sizes)} sizes ({', '.join(sizes['model'])}; "
                f"{count(sizes['n_params'].min())}–{count(sizes['n_params'].max())} parameters)" if len(sizes) > 1
                else f"one size ({sizes['model'].iloc[0]}, {count(sizes['n_params'].iloc[0])} parameters)")
             + (f" × {seeds[0]} seeds" if seeds == [seeds[0]] and seeds[0] > 1 else ""),
             f"{'/'.join(f'{s:,}' for s in steps)} training steps "
             f"({'/'.join(count(t) for t in sorted(set(last['tokens'])))} tokens)",
             f"{per_run.min()}{'–' + str(per_run.max()) if per_run.max() != per_run.min() else ''} checkpoints per run",
             f"probes: {', '.join(sorted(r['probe'].unique()))}"]
    return "; ".join(parts) + "."


def _task_link(task: str) -> str:
    return f'<a href="#task-{slug(task)}"><b>{esc(task)}</b></a>'


def headline_html(found: list[Finding]) -> str:
    items = []
    for f in found:
        if f.kind == "emerged":
            sizes = ", ".join(f"<b>{esc(s.model)}</b>{esc(size_onset_text(s)[len(s.model):])}" for s in f.emerged)
            text = f"{_task_link(f.task)} ({esc(metric_label(f.metric))}) emerged in {sizes}"
            if f.absent:
                text += "; not in " + esc(", ".join(absent_text(s) for s in f.absent))
            if f.trained:
                text += "; " + esc(trained_text(f))
            items.append(("emerged", text + (f"; <i>{esc(f.trend)}</i>." if f.trend else ".")))
        elif f.kind == "none":
            items.append(("none", "No transition in any size: " + "; ".join(
                f"{_task_link(task)} ({esc(label)}, at most {value(best)} at the end{esc(', though ' + note) if note else ''})"
                for task, label, best, note in f.items) + "."))
        elif f.kind == "mirage":
            text = esc(mirage_text(f))
            if f.task:
                text = text.replace(esc(f.task), _task_link(f.task), 1)
            items.append(("mirage", text))
        elif f.kind == "mechanism":
            items.append(("mechanism", f'<a href="#mechanisms">{esc(f.trend[0].upper() + f.trend[1:])}</a> '
                          f"({esc(f.metric)}): a transition in " + esc(", ".join(size_onset_text(s) for s in f.emerged)) + "."))
    if not items:
        items.append(("none", "No capability task in these results, and no transition in the mechanistic probes."))
    icons = {"emerged": "✓", "none": "✗", "mirage": "≈", "mechanism": "⚙"}
    return "\n".join(f'<li class="{k}"><span class="icon">{icons[k]}</span> {t}</li>' for k, t in items)


def _onset_color(step: float, lo: float, hi: float) -> tuple[str, str]:
    t = 0.5 if hi <= lo else (math.log10(step + 1) - lo) / (hi - lo)
    color = sample_colorscale("Viridis", [0.05 + 0.9 * min(max(t, 0), 1)], colortype="rgb")[0]
    r, g, b = (int(float(c)) for c in color[4:-1].split(","))
    return color, ("#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff")


def map_html(page: Page) -> str:
    """Tasks (headline and continuous metric) × sizes: each cell the onset step (95% interval,
    each seed's own onset) or "no transition", coloured by the onset; links to the task."""
    by = page.by_size.set_index(["metric", "model"]) if len(page.by_size) else None
    shown_metrics = [m for t in tasks(page.results) for m in t.metrics]
    found = page.by_size[(page.by_size["probe"] == "capability") & page.by_size["has_onset"]
                         & page.by_size["metric"].isin(shown_metrics)]["onset_step"]
    lo, hi = (math.log10(found.min() + 1), math.log10(found.max() + 1)) if len(found) else (0, 1)
    head = "".join(f"<th>{esc(s.model)}<small>{count(s.n_params)} params{f', {len(s.seeds)} seeds' if len(s.seeds) > 1 else ''}"
                   f"</small></th>" for s in page.sizes.itertuples())
    body = []
    for task in tasks(page.results):
        target = f"#task-{slug(task.name)}"
        for j, metric in enumerate(task.metrics):
            cells = []
            for s in page.sizes.itertuples():
                if by is None or (metric, s.model) not in by.index:
                    cells.append('<td class="na">—</td>')
                    continue
                row = by.loc[(metric, s.model)]
                seeds = ""
                if row["n_seeds"] > 1 and (row["has_onset"] or row["seeds_with_onset"]):
                    seeds = '<span class="seeds">' + " · ".join(
                        f"s{seed} {count(o) if o is not None else '—'}" for seed, o in row["per_seed"]) + "</span>"
                if row["has_onset"]:
                    bg, fg = _onset_color(row["onset_step"], lo, hi)
                    title = (f"{metric}, {s.model}: onset at step {count(row['onset_step'])} "
                             f"{interval(row['low'], row['high'])}, final {value(row['final_value'])}")
                    cells.append(f'<td class="on" style="background:{bg};color:{fg}" title="{esc(title)}">'
                                 f'<a href="{target}" style="color:{fg}"><b>{count(row["onset_step"])}</b>'
                                 f'<span class="ci">{interval(row["low"], row["high"])}</span>{seeds}</a></td>')
                else:
                    title = f"{metric}, {s.model}: no transition ({'; '.join(row['reasons'])})"
                    cells.append(f'<td class="off" title="{esc(title)}"><a href="{target}">no transition'
                                 f'<span class="ci">→ {value(row["final_value"])}</span>{seeds}</a></td>')
            name = (f'<th rowspan="{len(task.metrics)}" class="task"><a href="{target}">{esc(task.name)}</a></th>'
                    if j == 0 else "")
            body.append(f'<tr class="{"first" if j == 0 else "second"}">{name}'
                        f'<td class="metric">{esc(metric_label(metric))}</td>{"".join(cells)}</tr>')
    stops = ", ".join(sample_colorscale("Viridis", list(np.linspace(0.05, 0.95, 7)), colortype="rgb"))
    legend = (f'<div class="legend"><span>onset step: {count(10 ** lo - 1)}</span><span class="bar" '
              f'style="background:linear-gradient(to right, {stops})"></span><span>{count(10 ** hi - 1)}</span>'
              f'<span class="off-key">no transition</span></div>') if len(found) else ""
    return (f'<table class="map"><thead><tr><th>task</th><th>metric</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{legend}')


def _cell(row) -> str:
    if row is None:
        return '<td class="na">—</td>'
    if row["has_onset"]:
        return (f'<td data-v="{row["onset_step"]:.6g}">{count(row["onset_step"])} <small>{interval(row["low"], row["high"])}'
                f' → {value(row["final_value"])}</small></td>')
    return f'<td data-v="" class="dim">{value(row["start_value"])} → {value(row["final_value"])}</td>'


def metrics_table(page: Page, metrics: list[str], table_id: str, with_reason: bool = False,
                  probe: str = "capability") -> str:
    """Metric × size: onset [interval] → final value, or start → final value (no transition)."""
    by = page.by_size[page.by_size["probe"] == probe].set_index(["metric", "model"])
    head = "".join(f"<th>{esc(m)}</th>" for m in page.sizes["model"])
    rows = []
    for metric in metrics:
        cells = "".join(_cell(by.loc[(metric, m)] if (metric, m) in by.index else None) for m in page.sizes["model"])
        reason = ""
        if with_reason:
            reasons = sorted({r for m in page.sizes["model"] if (metric, m) in by.index for r in by.loc[(metric, m)]["reasons"]})
            reason = f'<td class="reason">{esc("; ".join(reasons[:3]))}</td>'
        name = metric if probe == "capability" else f"{F.panel_title(probe, metric)} ({probe}/{metric})"
        rows.append(f"<tr><td>{esc(name)}</td>{cells}{reason}</tr>")
    extra = "<th>why no onset</th>" if with_reason else ""
    return (f'<table class="t sortable" id="{table_id}"><thead><tr><th>metric</th>{head}{extra}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


# ---- tables ------------------------------------------------------------------------------------
def _fmt(kind: str, v) -> tuple[str, str | None]:
    """(text, sort value) of one cell."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—", ""
    if kind == "count":
        return count(float(v)), f"{float(v):.6g}"
    if kind == "value":
        return value(float(v)), f"{float(v):.6g}"
    if kind == "share":
        return f"{float(v):.0%}", f"{float(v):.4g}"
    if kind == "bool":
        return ("yes" if v else "no"), None
    return str(v), None


def data_table(table: pd.DataFrame, columns: list[tuple[str, str, str]], table_id: str) -> str:
    """A sortable table: columns [(header, field, kind)], kind in count, value, share, bool, text, wrap."""
    head = "".join(f"<th>{esc(h)}</th>" for h, f, _ in columns if f in table)
    rows = []
    for record in table.to_dict("records"):
        cells = []
        for _, field, kind in columns:
            if field not in table:
                continue
            text, sort = _fmt(kind, record.get(field))
            if kind == "wrap":  # long text: wrapped, not widening the table
                cells.append(f'<td class="reason">{esc(text)}</td>')
            else:
                cells.append(f'<td data-v="{sort}">{esc(text)}</td>' if sort is not None else f"<td>{esc(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="t sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def table_block(title: str, csv: str, table: pd.DataFrame, columns, table_id: str, note: str = "", open_: bool = False) -> str:
    return (f'<details{" open" if open_ else ""}><summary>{esc(title)} <span class="n">{len(table):,} rows</span> · '
            f'<a href="{esc(csv)}">{esc(csv)}</a></summary>{note}'
            f'<input class="filter" data-table="{table_id}" placeholder="filter rows (words, all must match)" '
            f'aria-label="filter {esc(title)}">{data_table(table, columns, table_id)}</details>')


EMERGENCE_COLUMNS = [("run", "run", "text"), ("probe", "probe", "text"), ("metric", "metric", "text"),
                     ("onset step", "onset_step", "count"), ("low", "onset_ci_low_step", "count"),
                     ("high", "onset_ci_high_step", "count"), ("steepest at", "steepest_step", "count"),
                     ("tokens at onset", "onset_tokens", "count"), ("FLOPs at onset", "onset_flops_6nd", "count"),
                     ("width (decades)", "width_decades", "value"),
                     ("abruptness (/decade)", "abruptness", "value"), ("start", "start_value", "value"),
                     ("final", "final_value", "value"), ("why no onset", "reason", "text")]
SCALE_COLUMNS = [("probe", "probe", "text"), ("metric", "metric", "text"), ("size", "model", "text"),
                 ("parameters", "n_params", "count"), ("final value", "final_value", "value"),
                 ("onset step", "onset_step", "count"), ("tokens at onset", "onset_tokens", "count"),
                 ("FLOPs at onset", "onset_flops_6nd", "count"),
                 ("smallest size ≥ 0.5", "smallest_size_reaching_threshold", "text")]
SEEDS_COLUMNS = [("size", "model", "text"), ("probe", "probe", "text"), ("metric", "metric", "text"),
                 ("seeds", "n_seeds", "count"), ("onset step", "onset_step", "count"), ("low", "ci_low_step", "count"),
                 ("high", "ci_high_step", "count"), ("found in", "onset_found_in", "share"), ("why no onset", "reason", "text")]
MIRAGE_COLUMNS = [("run", "run", "text"), ("task", "task", "text"), ("mirage", "mirage", "bool"),
                  ("exact match onset", "exact_match_onset", "count"),
                  ("exact match abruptness", "exact_match_abruptness", "value"),
                  ("token accuracy onset", "token_accuracy_onset", "count"),
                  ("token accuracy abruptness", "token_accuracy_abruptness", "value"),
                  ("answer log-prob onset", "answer_logprob_onset", "count"),
                  ("answer log-prob abruptness", "answer_logprob_abruptness", "value"),
                  ("Brier onset", "brier_onset", "count"), ("Brier abruptness", "brier_abruptness", "value")]
STAGE_ONSET_COLUMNS = [("run", "run", "text"), ("signal", "signal", "text"), ("boundary step", "boundary_step", "count"),
                       ("low", "low_step", "count"), ("high", "high_step", "count"),
                       ("checkpoint interval", "interval_steps", "count"), ("found in", "found_in", "share"),
                       ("onsets within one interval (step)", "onsets", "wrap")]
UNHEALTHY_COLUMNS = [("run", "run", "text"), ("step", "step", "count"), ("signal", "signal", "text"),
                     ("LLC", "value", "value"), ("drift", "drift", "value"), ("diverged", "diverged", "share"),
                     ("negative", "negative", "share")]
BY_SIZE_COLUMNS = [("probe", "probe", "text"), ("metric", "metric", "text"), ("size", "model", "text"),
                   ("seeds", "n_seeds", "count"), ("seeds with onset", "seeds_with_onset", "count"),
                   ("onset step", "onset_step", "count"), ("low", "low", "count"), ("high", "high", "count"),
                   ("interval over", "interval", "text"), ("start", "start_value", "value"),
                   ("final", "final_value", "value")]


def stages_html(page: Page, chart: Charts, max_step: float) -> str:
    """Developmental stages: each run's LLC and essential-dynamics trajectory, the boundaries
    found in them set against the capability onsets, the LLC estimates left out as unhealthy."""
    runs = sorted({r for r, _ in page.llc} | set(page.trajectories))
    if not runs:
        return ""
    parts = ['<p class="note">Boundaries found without choosing a metric: change points of the local learning '
             'coefficient (LLC, healthy estimates only) and turning points of the essential-dynamics trajectory '
             '(the model\'s log-probabilities on fixed probe positions, in their first principal components). Each '
             'lies between two probed checkpoints (low–high, widened by the chains\' bootstrap for the LLC).</p>']
    for run in runs:
        if any(r == run for r, _ in page.llc):
            parts.append(f"<h3>{esc(run)}: local learning coefficient</h3>"
                         + chart(F.llc_figure(run, page.llc, page.stages, max_step))
                         + '<p class="caption">Mean over SGLD chains; whiskers: standard error over chains; '
                         'red crosses: estimates the sampler flags as unhealthy (not estimates); shaded: the '
                         'boundaries found in each curve.</p>')
        fig = F.trajectory_figure(run, page.trajectories[run], page.stages) if run in page.trajectories else None
        if fig is not None:
            parts.append(f"<h3>{esc(run)}: essential dynamics</h3>" + chart(fig)
                         + '<p class="caption">Each point a checkpoint (hover for its step); ringed: the checkpoints '
                         'around a turning point.</p>')
    onsets = page.stage_onsets if page.stage_onsets is not None else pd.DataFrame()
    parts.append(table_block("Stage boundaries and the onsets within one checkpoint interval of them", "stage_onsets.csv",
                             onsets, STAGE_ONSET_COLUMNS, "tbl-stages", open_=True) if len(onsets) else
                 "<p>No stage boundary: every signal is flat or within its noise.</p>")
    if page.llc_unhealthy is not None and len(page.llc_unhealthy):
        parts.append(table_block("LLC estimates flagged unhealthy (left out of curves and stages)", "llc_unhealthy.csv",
                                 page.llc_unhealthy, UNHEALTHY_COLUMNS, "tbl-unhealthy",
                                 '<p class="note">drift: how far the chains\' loss still moved across the draws, as a '
                                 'share of its rise; diverged / negative: the share of chains whose loss blew up or '
                                 'whose estimate is below 0.</p>'))
    return "".join(parts)


# ---- the page ----------------------------------------------------------------------------------
def render(page: Page) -> str:
    chart = Charts()
    curves = F.Curves(page.results, page.sizes, page.by_size)
    found = page.found
    all_tasks = tasks(page.results)
    cap = page.by_size[page.by_size["probe"] == "capability"]
    with_onset = set(cap.loc[cap["has_onset"], "metric"])
    drawn_tasks = [t for t in all_tasks if set(t.metrics) & with_onset]
    flat_tasks = [t for t in all_tasks if t not in drawn_tasks]
    sentences = {f.task: f for f in found if f.kind == "emerged"}

    task_sections = []
    stage_note = ""
    for task in drawn_tasks:
        trained = trained_gap(page.by_size, task)[0]
        fig, stages_drawn = F.task_figure(task, curves, page.stages, trained)
        lead = ""
        if task.name in sentences:
            f = sentences[task.name]
            lead = (f"{esc(metric_label(f.metric))}: onset in " + esc(", ".join(size_onset_text(s) for s in f.emerged))
                    + (esc("; none in " + ", ".join(absent_text(s) for s in f.absent)) if f.absent else "")
                    + (esc("; " + trained_text(f)) if f.trained else "") + ".")
        else:
            lead = f"{esc(metric_label(task.headline))}: no transition in any size; {esc(metric_label(task.continuous))} has one."
        others = sorted(m for m in page.results.loc[page.results["probe"] == "capability", "metric"].unique()
                        if m.split("/")[0] == task.name and m not in task.metrics)
        if stages_drawn and not stage_note:
            stage_note = stages_drawn
        task_sections.append(
            f'<section class="task" id="task-{slug(task.name)}"><h3>{esc(task.name)}</h3><p class="lead">{lead}</p>'
            f'{chart(fig)}'
            f'<p class="caption">Lines: mean over seeds; bands: the range over seeds (one seed: the 95% interval over '
            f'probe items); diamonds: onsets with their 95% interval; dashed grey: chance'
            f'{", dotted: the same metric on trained items" if trained else ""}'
            f'{"; shaded: stage boundaries (stages table)" if stages_drawn else ""}. '
            f'Click a size in the legend to hide it, double-click to show it alone; drag to zoom the step axis.</p>'
            + (f'<details><summary>Other metrics of {esc(task.name)} ({len(others)})</summary><p class="note">'
               f'Onset step [95% interval] → final value; no transition (grey): start → final value.</p>'
               f'{metrics_table(page, others, f"other-{slug(task.name)}")}</details>' if others else "")
            + "</section>")
    if flat_tasks:
        metrics = [m for t in flat_tasks for m in t.metrics]
        anchors = "".join(f'<span id="task-{slug(t.name)}"></span>' for t in flat_tasks)
        task_sections.append(
            f'<section class="task" id="no-transition">{anchors}<h3>No transition in any size</h3>'
            f'<p class="lead">{esc(", ".join(t.name for t in flat_tasks))}: not drawn; each cell is '
            f'the value at the start → at the end of training (mean over seeds).</p>'
            f'{metrics_table(page, metrics, "flat", with_reason=True)}</section>')

    mech = []
    moving = set(map(tuple, page.by_size.loc[page.by_size["has_onset"], ["probe", "metric"]].to_numpy()))
    panels = [p for p in F.mechanism_panels(page.results) if p in moving]
    flat = [p for p in F.mechanism_panels(page.results) if p not in moving]
    if panels:
        fig, _ = F.mechanism_figure(curves, panels, page.stages)
        mech.append(chart(fig) + '<p class="caption">Max over heads: each checkpoint\'s strongest head. ICL score: '
                    'the loss late in the context minus early (more negative: more in-context learning). '
                    'Bands, diamonds and chance as in the task sections.</p>')
    if flat:
        mech.append('<p class="note">No transition in any size (not drawn; start → end of training):</p>'
                    + "".join(metrics_table(page, [m for p, m in flat if p == probe], f"flat-{probe}", True, probe)
                              for probe in dict.fromkeys(p for p, _ in flat)))
    heads = F.head_columns(page.results)
    if heads:
        mech.append(chart(F.heatmap_figure(curves, heads, "attention heads", "attention score"))
                    + '<p class="caption">Every head (L: layer, H: head) at every checkpoint, mean over seeds. '
                    'Induction score: attention from a repeated token to the token after its first occurrence; '
                    'previous-token score: attention to the previous position.</p>')
    linear = F.linear_columns(page.results)
    if linear:
        mech.append(chart(F.heatmap_figure(curves, linear, "linear probes", "accuracy"))
                    + '<p class="caption">Accuracy of a linear readout of the answer from the residual stream after '
                    'each layer (layer 0: the embeddings), on held-out items.</p>')

    compute = F.onset_compute_figure(curves, all_tasks, page.by_size) if len(page.sizes) > 1 else None
    stage_text = ""
    if page.stages is not None:
        stage_text = (f'<p class="note">Stage boundaries from the stages table ({len(page.stages)} rows) are shaded '
                      f'on every curve chart of their run\'s size: ' + esc("; ".join(stage_note)) + ".</p>"
                      if stage_note else '<p class="note">The stages table matches no run of this experiment.</p>')

    stages_text = stages_html(page, chart, curves.max_step)
    nav = [("headline", "What emerged"), ("map", "Emergence map"), ("tasks", "Tasks"),
           ("mechanisms", "Mechanisms"), ("stages", "Developmental stages"), ("compute", "Onset vs compute"),
           ("tables", "Tables"), ("method", "Method")]
    nav = [(k, v) for k, v in nav if k != "stages" or stages_text]
    sections = [
        f'<section id="headline"><h2>What emerged</h2><ul class="headline">{headline_html(found)}</ul>'
        f'<p class="note">Each size: onset step [95% interval] → value at the end of training. The onset is where '
        f'the curve last crosses half of its rise; with several seeds it is the onset of the seed-mean curve and '
        f'the interval comes from resampling seeds, with one seed from resampling probe items.</p></section>',
        f'<section id="map"><h2>Emergence map</h2><p class="note">Each task\'s headline metric (an all-or-nothing '
        f'score of the answer) and a continuous one, per size. Click a cell for the task\'s curves.</p>'
        f'{map_html(page)}</section>',
        f'<section id="tasks"><h2>Tasks</h2>{stage_text}{"".join(task_sections)}</section>',
        '<section id="mechanisms"><h2>Mechanisms</h2>'
        f'{"".join(mech) or "<p>No mechanistic probes in these results.</p>"}</section>',
        f'<section id="stages"><h2>Developmental stages</h2>{stages_text}</section>' if stages_text else "",
        '<section id="compute"><h2>Onset vs compute</h2>'
        + (chart(compute) + '<p class="caption">Training compute C = 6·N·D (N non-embedding parameters, D tokens) at '
           'each size\'s onset; whiskers: its 95% interval. Open triangles: no transition by the end of training, '
           'so the onset, if it comes, needs more compute than that.</p>' if compute else
           "<p>" + ("One size only: its onsets in FLOPs are in the tables below." if len(page.sizes) < 2
                    else "No transitions to place.") + "</p>")
        + "</section>",
        '<section id="tables"><h2>Tables</h2><p class="note">Click a column to sort; type to filter. Each table is '
        'also a CSV file beside this page.</p>'
        + table_block("Onsets per size (the emergence map)", "onsets_by_size.csv", page.by_size, BY_SIZE_COLUMNS, "tbl-by-size")
        + table_block("Exact match vs continuous metrics, per run (the mirage question)", "mirage.csv", page.mirage,
                      MIRAGE_COLUMNS, "tbl-mirage",
                      '<p class="note">mirage: exact match has an onset and no continuous metric of the task has a '
                      'transition at least half as abrupt (abruptness: 1 / transition width in decades of steps).</p>')
        + table_block("Onsets of the seed-mean curves", "onsets_over_seeds.csv", page.over_seeds, SEEDS_COLUMNS, "tbl-seeds")
        + table_block("Final values and onsets per size", "scale.csv", page.scale, SCALE_COLUMNS, "tbl-scale")
        + table_block("Every curve of every run", "emergence.csv", page.emergence, EMERGENCE_COLUMNS, "tbl-emergence")
        + "</section>",
        METHOD,
    ]
    title = f"Emergence report: {page.experiment}"
    return PAGE.format(
        title=esc(title), facts=esc(facts(page)), style=STYLE, script=SCRIPT, plotly=get_plotlyjs(),
        nav=" ".join(f'<a href="#{k}">{v}</a>' for k, v in nav), body="\n".join(sections))


METHOD = """<section id="method"><h2>Method</h2><p class="note">An onset is where a curve last crosses half of
its rise on a log-step axis (a sigmoid fit gives its width and abruptness); a curve gets none unless its rise exceeds
4 times its noise (the larger of its checkpoint-to-checkpoint scatter and the sampling error its probe declares) and,
for a bounded metric, 5% of its range. Intervals are 95% bootstrap intervals: over resampled probe items for one run,
over resampled seeds for a size's seed-mean curve. Files beside this page: results.parquet (every metric at every
checkpoint), emergence.csv|parquet|json, onsets_by_size.csv, onsets_over_seeds.csv, scale.csv, mirage.csv and
charts/*.png (static charts).</p></section>"""

STYLE = """
:root{--fg:#1d1d1f;--dim:#6b6b70;--line:#e3e3e6;--accent:#1b3a8a}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:var(--fg);margin:0;
 line-height:1.45;font-size:15px;background:#fafafa}
header{background:#fff;padding:18px 32px 8px}
header h1{margin:0 0 4px;font-size:24px}
header .facts{margin:0;color:var(--dim);font-size:14px}
nav{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid var(--line);padding:6px 32px;font-size:14px}
nav a{margin-right:16px;color:var(--accent);text-decoration:none}
main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}
section{scroll-margin-top:44px}
h2{font-size:20px;margin:28px 0 8px;border-bottom:2px solid var(--line);padding-bottom:4px}
h3{font-size:17px;margin:22px 0 4px}
a{color:var(--accent)}
.note,.caption{color:var(--dim);font-size:13.5px;margin:4px 0 10px}
.lead{margin:2px 0 6px}
ul.headline{list-style:none;padding:14px 18px;margin:0;background:#fff;border:1px solid var(--line);border-radius:8px}
ul.headline li{margin:6px 0;padding-left:26px;text-indent:-26px}
.icon{display:inline-block;width:22px;text-align:center;font-weight:bold}
li.emerged .icon{color:#1a7f37} li.none .icon{color:#b42318} li.mirage .icon{color:#b26b00} li.mechanism .icon{color:#555}
.chart{background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px;margin:6px 0}
table.map{border-collapse:separate;border-spacing:3px;background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px}
.map th{font-size:14px;text-align:center;padding:4px 10px}
.map th small{display:block;font-weight:normal;color:var(--dim);font-size:12px}
.map th.task{text-align:left}
.map td{min-width:118px;text-align:center;border-radius:5px;padding:0;font-size:14px}
.map td a{display:block;padding:5px 6px;text-decoration:none;color:inherit}
.map td.metric{min-width:0;text-align:left;color:var(--dim);font-size:13px;padding:0 8px}
.map tr.second td.on,.map tr.second td.off{opacity:.82}
.map td.off{background:#f0f0f2;color:#8a8a90}
.map td.na{color:#bbb}
.map .ci,.map .seeds{display:block;font-size:11.5px;opacity:.9}
.legend{display:flex;align-items:center;gap:8px;font-size:13px;color:var(--dim);margin:6px 0 0 4px}
.legend .bar{display:inline-block;width:220px;height:12px;border-radius:3px}
.legend .off-key{margin-left:16px;background:#f0f0f2;color:#8a8a90;padding:1px 8px;border-radius:4px}
table.t{border-collapse:collapse;font-size:13px;background:#fff;margin:6px 0}
.t th{position:sticky;top:33px;background:#f3f3f5;cursor:pointer;text-align:left;padding:4px 8px;white-space:nowrap;
 border-bottom:1px solid #ccc;user-select:none}
.t th[data-dir=asc]::after{content:" ▲"} .t th[data-dir=desc]::after{content:" ▼"}
.t td{padding:3px 8px;border-bottom:1px solid #eee;white-space:nowrap}
.t td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
.t td.dim{color:#999} .t td small{color:var(--dim)} .t td.reason{white-space:normal;color:var(--dim);max-width:380px}
details{margin:8px 0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px 12px}
summary{cursor:pointer;font-weight:600}
summary .n{font-weight:normal;color:var(--dim)}
input.filter{display:block;margin:8px 0 4px;padding:5px 8px;width:340px;font-size:13px;border:1px solid #ccc;border-radius:5px}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, i) {
    th.addEventListener('click', function () {
      var asc = th.dataset.dir !== 'asc', body = table.tBodies[0];
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      var key = function (row) {
        var c = row.cells[i];
        if (c.dataset.v === undefined) return c.textContent;
        return c.dataset.v === '' ? NaN : parseFloat(c.dataset.v);
      };
      Array.from(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' || typeof y === 'number') {
          if (isNaN(x)) return isNaN(y) ? 0 : 1;
          if (isNaN(y)) return -1;
          return asc ? x - y : y - x;
        }
        return asc ? x.localeCompare(y) : y.localeCompare(x);
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll('input.filter').forEach(function (input) {
  input.addEventListener('input', function () {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
    Array.from(document.getElementById(input.dataset.table).tBodies[0].rows).forEach(function (row) {
      var text = row.textContent.toLowerCase();
      row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
    });
  });
});
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
<script>{plotly}</script>
</head><body>
<header><h1>{title}</h1><p class="facts">{facts}</p></header>
<nav>{nav}</nav>
<main>
{body}
</main>
<script>{script}</script>
</body></html>
"""


def write(page: Page, path: Path) -> Path:
    path.write_text(render(page), encoding="utf-8")
    return path
