"""From the results table to "when did it appear?": the analysis tables (tables/), the
findings (headline.txt), every chart once (charts/*.png) and the page (index.html)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import pandas as pd

from observatory import store
from observatory.analysis.emergence import curves_with_onsets, emergence_table, headline_metrics, onsets_over_seeds
from observatory.analysis.stages import ED_PROBE, llc_curves, onsets_near_boundaries, stage_table
from observatory.analysis.tables import (
    metric_info,
    mirage_table,
    ngram_minima,
    onsets_by_size,
    scale_table,
    sizes,
    tasks,
    unhealthy_table,
)
from observatory.report.figures import report_charts, write_images
from observatory.report.findings import Finding, findings, headline_text, statistics_findings
from observatory.report.page import render

TABLES_DIR = "tables"


@dataclass
class Report:
    """Everything the page, headline.txt and W&B are made from."""

    experiment: str
    results: pd.DataFrame  # the curves with onsets (stage signals are in `llc` and `trajectories`)
    tables: dict[str, pd.DataFrame]  # name -> table, each also tables/<name>.csv|parquet
    sizes: pd.DataFrame
    found: list[Finding]
    charts: dict = field(default_factory=dict)  # file stem -> plotly figure
    images: str | None = None  # why there are no PNG charts, if there are none
    llc: dict = field(default_factory=dict)  # (run, signal) -> LLC curve
    trajectories: dict = field(default_factory=dict)  # run -> essential-dynamics Trajectory

    @cached_property
    def info(self) -> pd.DataFrame:
        """(probe, metric) -> what the metric is (observatory/analysis/tables.py: metric_info)."""
        return metric_info(self.results)


def tables_dir(experiment_dir: Path) -> Path:
    return store.output_dir(experiment_dir) / TABLES_DIR


def analyse(experiment_dir: Path, n_boot: int = 100, fraction: float = 0.5) -> Report:
    """The tables, findings and charts of an experiment's stored results."""
    out = store.output_dir(experiment_dir)
    everything = pd.read_parquet(out / "results.parquet")
    if everything.empty:
        raise ValueError(f"{out / 'results.parquet'} is empty: run python -m observatory first")
    if "role" not in everything or everything["role"].isna().any():
        raise ValueError(f"{out / 'results.parquet'} was written before metrics declared what they are (their role, "
                         "task, label...): run python -m observatory, which redoes them")
    integrity = store.read_integrity(experiment_dir)
    left_out = store.suspect_checkpoints(integrity)
    suspect = pd.Series([(r, s) in left_out for r, s in zip(everything["run"], everything["step"])],
                        index=everything.index, dtype=bool)
    everything, suspect_rows = everything[~suspect], everything[suspect]  # a revision that is not what its name says
    results = curves_with_onsets(everything)
    emergence = emergence_table(results, partial(store.read_item_results, experiment_dir), fraction=fraction,
                                n_boot=n_boot)
    over_seeds = onsets_over_seeds(results, fraction=fraction, n_boot=n_boot)
    by_size = onsets_by_size(emergence, over_seeds)
    mirage = mirage_table(emergence)
    stages, trajectories = stage_table(everything, partial(store.read_item_results, experiment_dir, probe=ED_PROBE),
                                       n_boot=n_boot)
    tables = {"emergence": emergence, "scale": scale_table(results, emergence), "mirage": mirage,
              "onsets_over_seeds": over_seeds, "onsets_by_size": by_size, "stages": stages,
              "stage_onsets": onsets_near_boundaries(stages, emergence, headline_metrics(results)),
              "llc_unhealthy": unhealthy_table(everything), "ngram_minima": ngram_minima(everything),
              "integrity": integrity}
    size_table, llc = sizes(results), llc_curves(everything)
    charts = report_charts(results, size_table, by_size, tasks(results), mirage, stages, llc, trajectories,
                           everything, tables["ngram_minima"], curves_with_onsets(suspect_rows))
    found = findings(results, by_size, mirage) + statistics_findings(tables["ngram_minima"], by_size, stages)
    return Report(str(results["experiment"].iloc[0]), results, tables, size_table, found, charts, None, llc, trajectories)


STORED = ("integrity",)  # tables the report shows but the store writes (observatory/integrity.csv)


def write_report(experiment_dir: Path, n_boot: int = 100, fraction: float = 0.5) -> Path:
    """tables/, headline.txt, charts/ and index.html under <experiment>/observatory/."""
    return write(analyse(experiment_dir, n_boot, fraction), experiment_dir)


def write(report: Report, experiment_dir: Path) -> Path:
    """The report's files; returns index.html's path."""
    out = store.output_dir(experiment_dir)
    made = {name: table for name, table in report.tables.items() if name not in STORED}
    write_tables(made, tables_dir(experiment_dir))
    for old in (out / f"{name}.{ext}" for name in made for ext in ("csv", "parquet", "json")):
        old.unlink(missing_ok=True)  # the tables' place before tables/: never two copies that can disagree
    (out / "headline.txt").write_text("".join(f"{line}\n" for line in headline_text(report.found)))
    for old in (out / "charts").glob("*.png"):  # charts of an earlier report that this one may not draw
        old.unlink()
    report.images = write_images(report.charts, out / "charts")[1]
    if report.images:
        print(f"note: {report.images}", file=sys.stderr)
    index = out / "index.html"
    index.write_text(render(report), encoding="utf-8")
    return index


def write_tables(tables: dict[str, pd.DataFrame], folder: Path) -> None:
    """Each table as Parquet (typed, for programs) and CSV (for people); emergence also as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if name == "onsets_by_size":  # each seed's onset as text: "0: 2528; 1: —"
            table = table.assign(per_seed=["; ".join(f"{s}: {'—' if o is None else f'{o:.6g}'}" for s, o in seeds)
                                           for seeds in table["per_seed"]],
                                 reasons=["; ".join(r) for r in table["reasons"]], runs=[" ".join(r) for r in table["runs"]])
        store.write_parquet(folder / f"{name}.parquet", table)
        table.to_csv(folder / f"{name}.csv", index=False)
    (folder / "emergence.json").write_text(tables["emergence"].to_json(orient="records", indent=1))
