"""index.html: one self-contained page that answers "what emerged, when, at which size" at a
glance. The headline (the findings' sentences), the emergence map (tasks × sizes), one
section per task, the mechanistic probes, the developmental stages, onset vs compute, then
the tables (sortable and filterable, each also a CSV file in tables/).

This module decides what to show; templates/page.html.j2 writes the markup (Jinja2, escaping
by default), static/ holds its CSS and JS. The charts are the report's plotly figures
(observatory/report/figures.py); plotly.js, the CSS and the JS are inlined once, so the page
opens from a file with nothing fetched."""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import pandas as pd
import plotly.io as pio
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs

from observatory.analysis.tables import comes_apart, tasks
from observatory.metrics import TASK_ROLES
from observatory.report.figures import mechanism_panels, run_models, stage_captions
from observatory.report.findings import Emerged, sentence, slug
from observatory.report.format import count, interval, label, title, value

CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"],
          "toImageButtonOptions": {"format": "png", "scale": 2}}
ICONS = {"emerged": "✓", "none": "✗", "mirage": "≈", "no mirage": "≈", "mechanism": "⚙", "statistics": "∿",
         "stage order": "→"}


# ---- tables ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    header: str
    field: str
    kind: str  # count, value, share, bool, text, wrap (long text, wrapped)


def columns(*spec: tuple[str, str, str]) -> list[Column]:
    return [Column(*c) for c in spec]


EMERGENCE_COLUMNS = columns(
    ("run", "run", "text"), ("probe", "probe", "text"), ("metric", "metric", "text"), ("onset step", "onset_step", "count"),
    ("low", "onset_ci_low_step", "count"), ("high", "onset_ci_high_step", "count"),
    ("steepest at", "steepest_step", "count"), ("tokens at onset", "onset_tokens", "count"),
    ("FLOPs at onset", "onset_flops_6nd", "count"), ("width (decades)", "width_decades", "value"),
    ("abruptness (/decade)", "abruptness", "value"), ("start", "start_value", "value"), ("final", "final_value", "value"),
    ("why no onset", "reason", "text"))
SCALE_COLUMNS = columns(
    ("probe", "probe", "text"), ("metric", "metric", "text"), ("size", "model", "text"), ("parameters", "n_params", "count"),
    ("final value", "final_value", "value"), ("onset step", "onset_step", "count"),
    ("tokens at onset", "onset_tokens", "count"), ("FLOPs at onset", "onset_flops_6nd", "count"),
    ("smallest size ≥ 0.5", "smallest_size_reaching_threshold", "text"))
SEEDS_COLUMNS = columns(
    ("size", "model", "text"), ("probe", "probe", "text"), ("metric", "metric", "text"), ("seeds", "n_seeds", "count"),
    ("onset step", "onset_step", "count"), ("low", "ci_low_step", "count"), ("high", "ci_high_step", "count"),
    ("found in", "onset_found_in", "share"), ("why no onset", "reason", "text"))
MIRAGE_COLUMNS = columns(
    ("run", "run", "text"), ("task", "task", "text"), ("mirage", "mirage", "bool"), ("all-or-nothing metric", "label", "text"),
    ("its onset", "onset_step", "count"), ("its abruptness", "abruptness", "value"),
    ("continuous metrics with an onset", "continuous_with_onset", "wrap"),
    ("first continuous onset", "first_continuous_onset", "count"), ("sharpest continuous", "sharpest_continuous", "text"),
    ("its abruptness", "sharpest_continuous_abruptness", "value"))
STAGE_ONSET_COLUMNS = columns(
    ("run", "run", "text"), ("signal", "signal", "text"), ("boundary step", "boundary_step", "count"),
    ("low", "low_step", "count"), ("high", "high_step", "count"), ("checkpoint interval", "interval_steps", "count"),
    ("found in", "found_in", "share"), ("onsets within one interval (step)", "onsets", "wrap"))
MINIMA_COLUMNS = columns(
    ("run", "run", "text"), ("metric", "metric", "text"), ("what", "label", "text"), ("lowest at step", "min_step", "count"),
    ("low", "low_step", "count"), ("high", "high_step", "count"), ("start", "start_value", "value"),
    ("lowest", "min_value", "value"), ("final", "final_value", "value"), ("falls to it", "falls_to_it", "bool"),
    ("rises after", "rises_after", "bool"))
UNHEALTHY_COLUMNS = columns(
    ("run", "run", "text"), ("step", "step", "count"), ("signal", "signal", "text"), ("LLC", "value", "value"),
    ("drift", "drift", "value"), ("diverged", "diverged", "share"), ("negative", "negative", "share"))
INTEGRITY_COLUMNS = columns(
    ("run", "run", "text"), ("revision", "revision", "text"), ("step", "step", "count"), ("sha256", "sha256", "text"),
    ("same weights as", "same_as", "text"), ("warning", "warning", "wrap"), ("loaded", "loaded", "bool"))
BY_SIZE_COLUMNS = columns(
    ("probe", "probe", "text"), ("metric", "metric", "text"), ("size", "model", "text"), ("seeds", "n_seeds", "count"),
    ("seeds with onset", "seeds_with_onset", "count"), ("onset step", "onset_step", "count"), ("low", "low", "count"),
    ("high", "high", "count"), ("interval over", "interval", "text"), ("start", "start_value", "value"),
    ("final", "final_value", "value"))


def cell(kind: str, v) -> dict:
    """One cell: its text, its sort value (None: sort by text) and whether it wraps."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return {"text": "—", "sort": "" if kind in ("count", "value", "share") else None, "wrap": kind == "wrap"}
    if kind == "count":
        return {"text": count(float(v)), "sort": f"{float(v):.6g}", "wrap": False}
    if kind == "value":
        return {"text": value(float(v)), "sort": f"{float(v):.6g}", "wrap": False}
    if kind == "share":
        return {"text": f"{float(v):.0%}", "sort": f"{float(v):.4g}", "wrap": False}
    if kind == "bool":
        return {"text": "yes" if v else "no", "sort": None, "wrap": False}
    return {"text": str(v), "sort": None, "wrap": kind == "wrap"}


def table_block(title_: str, csv: str, table: pd.DataFrame, spec: list[Column], table_id: str, note: str = "",
                open_: bool = False, folder: str = "tables/") -> dict:
    """A sortable, filterable table of `table`'s columns in `spec`: a column it lacks is an
    error, never a blank (a renamed column must not vanish from the page)."""
    missing = [c.field for c in spec if c.field not in table.columns]
    if missing:
        raise KeyError(f"table {table_id!r} ({csv}) has no column(s) {missing}; it has {list(table.columns)}")
    rows = [[cell(c.kind, record[c.field]) for c in spec] for record in table.to_dict("records")]
    return {"title": title_, "csv": f"{folder}{csv}", "id": table_id, "headers": [c.header for c in spec], "rows": rows,
            "note": note, "open": open_, "n": len(table)}


# ---- pieces -----------------------------------------------------------------------------------
class Charts:
    """The report's figures as HTML fragments, numbered in page order."""

    def __init__(self, figures: dict):
        self.figures, self.n = figures, 0

    def __call__(self, name: str) -> Markup:
        fig = self.figures[name]
        self.n += 1
        return Markup(pio.to_html(fig, include_plotlyjs=False, full_html=False, config=CONFIG,
                                  div_id=f"chart-{self.n}", default_height=f"{fig.layout.height}px"))


def facts(report) -> str:
    r, sizes = report.results, report.sizes
    seeds = sorted({len(s) for s in sizes["seeds"]})
    last = r.sort_values("step").groupby("run").tail(1)
    per_run = r.groupby("run")["step"].nunique()
    runs = r["run"].nunique()
    which = (f"{len(sizes)} sizes ({', '.join(sizes['model'])}; {count(sizes['n_params'].min())}–"
             f"{count(sizes['n_params'].max())} parameters)" if len(sizes) > 1
             else f"one size ({sizes['model'].iloc[0]}, {count(sizes['n_params'].iloc[0])} parameters)")
    if seeds == [seeds[0]] and seeds[0] > 1:
        which += f" × {seeds[0]} seeds"
    parts = [f"{runs} run{'s' if runs > 1 else ''}: {which}",
             f"{'/'.join(f'{s:,}' for s in sorted(set(last['step'])))} training steps "
             f"({'/'.join(count(t) for t in sorted(set(last['tokens'])))} tokens)",
             f"{per_run.min()}{'–' + str(per_run.max()) if per_run.max() != per_run.min() else ''} checkpoints per run",
             f"probes: {', '.join(sorted(r['probe'].unique()))}"]
    return "; ".join(parts) + "."


def _onset_color(step: float, lo: float, hi: float) -> tuple[str, str]:
    t = 0.5 if hi <= lo else (math.log10(step + 1) - lo) / (hi - lo)
    color = sample_colorscale("Viridis", [0.05 + 0.9 * min(max(t, 0), 1)], colortype="rgb")[0]
    r, g, b = (int(float(c)) for c in color[4:-1].split(","))
    return color, ("#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff")


def _seeds(row) -> str:
    if row["n_seeds"] > 1 and (row["has_onset"] or row["seeds_with_onset"]):
        return " · ".join(f"s{seed} {count(o) if o is not None else '—'}" for seed, o in row["per_seed"])
    return ""


def emergence_map(report) -> dict:
    """Tasks (headline and continuous metric) × sizes: each cell the onset step (95% interval,
    each seed's own onset) or "no transition", coloured by the onset; links to the task."""
    by_size = report.tables["onsets_by_size"]
    by = by_size.set_index(["metric", "model"]) if len(by_size) else None
    all_tasks = tasks(report.results)
    shown = [m for t in all_tasks for m in t.metrics]
    found = by_size[by_size["has_onset"] & by_size["metric"].isin(shown)]["onset_step"] if len(by_size) else []
    lo, hi = (math.log10(found.min() + 1), math.log10(found.max() + 1)) if len(found) else (0, 1)
    rows = []
    for task in all_tasks:
        target = f"#task-{slug(task.name)}"
        for j, metric in enumerate(task.metrics):
            cells = []
            for s in report.sizes.itertuples():
                if by is None or (metric, s.model) not in by.index:
                    cells.append(None)
                    continue
                row = by.loc[(metric, s.model)]
                if row["has_onset"]:
                    bg, fg = _onset_color(row["onset_step"], lo, hi)
                    cells.append({"on": True, "bg": bg, "fg": fg, "text": count(row["onset_step"]),
                                  "ci": interval(row["low"], row["high"]), "seeds": _seeds(row),
                                  "title": f"{metric}, {s.model}: onset at step {count(row['onset_step'])} "
                                           f"{interval(row['low'], row['high'])}, final {value(row['final_value'])}"})
                else:
                    cells.append({"on": False, "ci": f"→ {value(row['final_value'])}", "seeds": _seeds(row),
                                  "title": f"{metric}, {s.model}: no transition ({'; '.join(row['reasons'])})"})
            rows.append({"task": task.name if j == 0 else None, "span": len(task.metrics), "target": target,
                         "first": j == 0, "label": label(report.info.loc[(task.probe, metric)]), "cells": cells})
    stops = ", ".join(sample_colorscale("Viridis", list(np.linspace(0.05, 0.95, 7)), colortype="rgb"))
    heads = [{"model": s.model, "params": count(s.n_params), "seeds": len(s.seeds)} for s in report.sizes.itertuples()]
    return {"heads": heads, "rows": rows, "legend": (count(10**lo - 1), count(10**hi - 1), stops) if len(found) else None}


def metrics_table(report, keys: list[tuple[str, str]], table_id: str, with_reason: bool = False) -> dict:
    """Metric × size: onset [interval] → final value, or start → final value (no transition)."""
    by = report.tables["onsets_by_size"].set_index(["probe", "metric", "model"])
    models = list(report.sizes["model"])
    rows = []
    for probe, metric in keys:
        found = [by.loc[(probe, metric, m)] if (probe, metric, m) in by.index else None for m in models]
        cells = [None if r is None else
                 {"on": True, "sort": f"{r['onset_step']:.6g}", "text": count(r["onset_step"]),
                  "small": f"{interval(r['low'], r['high'])} → {value(r['final_value'])}"} if r["has_onset"] else
                 {"on": False, "text": f"{value(r['start_value'])} → {value(r['final_value'])}"} for r in found]
        reasons = sorted({reason for r in found if r is not None for reason in r["reasons"]})[:3]
        info = report.info.loc[(probe, metric)]
        name = metric if info["role"] in TASK_ROLES else f"{title(info)} ({probe}/{metric})"
        rows.append({"name": name, "cells": cells, "reason": "; ".join(reasons)})
    return {"id": table_id, "models": models, "rows": rows, "with_reason": with_reason}


def task_sections(report) -> tuple[list[dict], dict | None]:
    """The tasks with a transition in some metric (drawn, led by their finding's sentence), and
    the flat ones (a table)."""
    by_size = report.tables["onsets_by_size"]
    moving = set(by_size.loc[by_size["has_onset"], "metric"]) if len(by_size) else set()
    sentences = {f.task: sentence(f, html=True) for f in report.found if isinstance(f, Emerged)}
    mirage = report.tables["mirage"]
    flagged = set(mirage.loc[mirage["mirage"].astype(bool), "task"]) if len(mirage) else set()
    drawn, flat = [], []
    for task in tasks(report.results):
        if not set(task.metrics) & moving:
            flat.append(task)
            continue
        headline, continuous = (label(report.info.loc[(task.probe, m)]) for m in task.metrics)  # one moved
        lead = sentences.get(task.name) or f"{headline}: no transition in any size; {continuous} has one."
        others = [(task.probe, m) for m in task.others]
        drawn.append({"name": task.name, "slug": slug(task.name), "lead": lead, "chart": f"task-{task.name}",
                      "trained": bool(comes_apart(by_size, task)),
                      # where the mirage question says yes: every held-out metric, in steps and in size
                      "mirage": [c for c in (f"mirage-{task.name}", f"mirage-size-{task.name}")
                                 if task.name in flagged and c in report.charts],
                      "others": metrics_table(report, others, f"other-{slug(task.name)}") if others else None})
    flat_block = None
    if flat:
        keys = [(t.probe, m) for t in flat for m in t.metrics]
        flat_block = {"names": ", ".join(t.name for t in flat), "anchors": [slug(t.name) for t in flat],
                      "table": metrics_table(report, keys, "flat", with_reason=True)}
    return drawn, flat_block


def mechanisms(report) -> dict:
    by_size = report.tables["onsets_by_size"]
    moving = set(map(tuple, by_size.loc[by_size["has_onset"], ["probe", "metric"]].to_numpy())) if len(by_size) else set()
    flat = [p for p in mechanism_panels(report.results) if p not in moving]
    flat_tables = [metrics_table(report, [p for p in flat if p[0] == probe], f"flat-{probe}", True)
                   for probe in dict.fromkeys(p for p, _ in flat)]
    return {"drawn": "mechanisms" in report.charts, "flat": flat_tables, "heads": "heads" in report.charts,
            "linear": "linear" in report.charts}


def stages_section(report) -> dict | None:
    """Each run's LLC and essential-dynamics charts, the boundaries against the onsets, the
    LLC estimates left out as unhealthy; None when no run has a stage signal."""
    runs = sorted({r for r, _ in report.llc} | set(report.trajectories))
    if not runs:
        return None
    per_run = [{"run": run, "llc": f"llc-{run}" if f"llc-{run}" in report.charts else None,
                "trajectory": f"essential-dynamics-{run}" if f"essential-dynamics-{run}" in report.charts else None}
               for run in runs]
    onsets, unhealthy = report.tables["stage_onsets"], report.tables["llc_unhealthy"]
    return {"runs": per_run,
            "onsets": table_block("Stage boundaries and the onsets within one checkpoint interval of them",
                                  "stage_onsets.csv", onsets, STAGE_ONSET_COLUMNS, "tbl-stages", open_=True)
            if len(onsets) else None,
            "unhealthy": table_block("LLC estimates flagged unhealthy (left out of curves and stages)", "llc_unhealthy.csv",
                                     unhealthy, UNHEALTHY_COLUMNS, "tbl-unhealthy",
                                     "drift: how far the chains' loss still moved across the draws, as a share of its "
                                     "rise; diverged / negative: the share of chains whose loss blew up or whose "
                                     "estimate is below 0.") if len(unhealthy) else None}


def statistics_section(report) -> dict | None:
    """Each run's n-gram statistics chart and the minima table; None without the ngram probe."""
    minima = report.tables["ngram_minima"]
    if not len(minima):
        return None
    return {"charts": [f"statistics-{run}" for run in sorted(set(minima["run"])) if f"statistics-{run}" in report.charts],
            "minima": table_block("Where each curve is lowest", "ngram_minima.csv", minima, MINIMA_COLUMNS, "tbl-minima",
                                  "low–high: the probed checkpoints either side of the lowest one; falls to it / rises "
                                  "after: the start / the end lies more than two standard errors above it.",
                                  open_=True)}


def tables(report) -> list[dict]:
    """The report's tables that have rows (an empty one is not drawn: its CSV is still written)."""
    t = report.tables
    blocks = [table_block("Onsets per size (the emergence map)", "onsets_by_size.csv", t["onsets_by_size"], BY_SIZE_COLUMNS,
                        "tbl-by-size"),
            table_block("The all-or-nothing metric vs the continuous ones, per run and task (the mirage question)",
                        "mirage.csv", t["mirage"], MIRAGE_COLUMNS, "tbl-mirage",
                        "mirage: the all-or-nothing metric has an onset and no continuous metric of the task has a "
                        "transition at least half as abrupt (abruptness: 1 / transition width in decades of steps)."),
            table_block("Onsets of the seed-mean curves", "onsets_over_seeds.csv", t["onsets_over_seeds"], SEEDS_COLUMNS,
                        "tbl-seeds"),
            table_block("Final values and onsets per size", "scale.csv", t["scale"], SCALE_COLUMNS, "tbl-scale"),
            table_block("Every curve of every run", "emergence.csv", t["emergence"], EMERGENCE_COLUMNS, "tbl-emergence"),
            table_block("The hub revisions checked (integrity.csv)", "integrity.csv", t["integrity"], INTEGRITY_COLUMNS,
                        "tbl-integrity", "A revision with a warning holds another's weights (byte for byte, or the same "
                        "numbers) or lies off the path training takes; it is left out of the onsets and drawn as a cross.",
                        open_=bool((t["integrity"]["warning"] != "").any()), folder="")]  # the store's own file
    return [b for b in blocks if b["n"]]


# ---- the page ----------------------------------------------------------------------------------
_ENV = Environment(loader=PackageLoader("observatory.report"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)


def render(report) -> str:
    """The whole page, from a built report (observatory/report/build.py)."""
    task_list, flat = task_sections(report)
    static = files("observatory.report") / "static"
    return _ENV.get_template("page.html.j2").render(
        title=f"Emergence report: {report.experiment}", facts=facts(report), icons=ICONS,
        findings=[(f.kind, sentence(f, html=True)) for f in report.found], emergence_map=emergence_map(report),
        tasks=task_list, flat=flat, stage_captions=stage_captions(run_models(report.sizes), report.tables["stages"]),
        n_stages=len(report.tables["stages"]), mechanisms=mechanisms(report), stages=stages_section(report),
        statistics=statistics_section(report), has_tasks=bool(tasks(report.results)),
        n_sizes=len(report.sizes), tables=tables(report), images=report.images, chart=Charts(report.charts),
        style=Markup((static / "style.css").read_text()), script=Markup((static / "page.js").read_text()),
        plotly=Markup(get_plotlyjs()))
