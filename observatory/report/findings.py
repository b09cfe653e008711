"""What the tables say, as data: per task and size, did the capability emerge, at which step
(with its interval); which tasks show no transition; which transitions are abrupt only under
the all-or-nothing metric (the mirage question); which mechanisms have a transition.

Each finding is a typed record. Its sentence is written once, in templates/finding.j2, and
rendered as plain text (the console, headline.txt, W&B) or as HTML (the page) by `sentence`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from observatory.analysis.tables import comes_apart, tasks
from observatory.metrics import MECHANISM, absent
from observatory.report.format import count, interval, label, value


@dataclass(frozen=True)
class SizeOnset:
    """One size's onset of a curve (of its seed-mean curve with several seeds), or none."""

    model: str
    onset: float | None
    low: float | None
    high: float | None
    final: float
    interval: str | None  # what the interval resamples: "items", "seeds", "seed range" or None
    seeds_with_onset: int
    n_seeds: int
    per_seed: tuple = ()  # ((seed, onset or None), ...)
    found_in: float | None = None


@dataclass(frozen=True)
class Emerged:
    """A task's headline metric has a transition in some sizes."""

    kind: ClassVar[str] = "emerged"
    task: str
    metric: str  # its label
    emerged: tuple[SizeOnset, ...]
    absent: tuple[SizeOnset, ...]  # the sizes without one
    trend: str | None  # "earlier in larger models", "later in larger models"
    trained: tuple[SizeOnset, ...] = ()  # on trained items, where that comes apart (memorization first: grokking)


@dataclass(frozen=True)
class Flat:
    """A task whose headline metric has no transition in any size."""

    task: str
    metric: str  # its label
    best_final: float  # the largest final value over sizes
    continuous: str | None = None  # its continuous metric's label, where that one has a transition
    continuous_sizes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoTransition:
    kind: ClassVar[str] = "none"
    tasks: tuple[Flat, ...]


@dataclass(frozen=True)
class Mirage:
    """The task's all-or-nothing metric is abrupt where none of its continuous metrics is."""

    kind: ClassVar[str] = "mirage"
    task: str
    metric: str  # the all-or-nothing metric's label
    continuous: tuple[str, ...]  # the continuous metrics' labels
    where: tuple[tuple[str, int, int], ...]  # (size, runs flagged, runs of that size)


@dataclass(frozen=True)
class NoMirage:
    kind: ClassVar[str] = "no mirage"
    compared: bool  # some all-or-nothing metric had a transition to compare
    metrics: str  # the all-or-nothing metrics' labels


@dataclass(frozen=True)
class MechanismFinding:
    kind: ClassVar[str] = "mechanism"
    metric: str  # its label
    name: str  # probe/metric
    emerged: tuple[SizeOnset, ...]


@dataclass(frozen=True)
class Closest:
    """One n-gram order: the step where the predictions came closest to its statistics."""

    label: str  # "KL to the bigram statistics"
    step: float  # the median over the size's seeds of each run's step of the minimum
    steps: tuple[int, ...]  # each seed's
    rises_after: bool  # in most seeds the curve rose again after its minimum (beyond its noise)
    at_end: bool  # the minimum is the last checkpoint in most seeds: still falling


@dataclass(frozen=True)
class Statistics:
    """Per size, the minima of the KL to each n-gram model (Belrose et al. 2024's stages)."""

    kind: ClassVar[str] = "statistics"
    model: str
    closest: tuple[Closest, ...]


@dataclass(frozen=True)
class StageOrder:
    """Per size, the developmental events in the order of their steps: the n-gram minima, the
    mechanisms' onsets (seed-mean curves) and the stage boundaries of its runs."""

    kind: ClassVar[str] = "stage order"
    model: str
    events: tuple[tuple[str, float], ...]  # (what, step), sorted by step
    boundaries: tuple[tuple[str, float, int], ...]  # (signal, step, runs): alike boundaries of the size's runs once
    n_runs: int = 1


Finding = Emerged | NoTransition | Mirage | NoMirage | MechanismFinding | Statistics | StageOrder


# ---- from the tables --------------------------------------------------------------------
def _size_onsets(by_size: pd.DataFrame, probe: str, metric: str | None) -> list[SizeOnset]:
    if metric is None or not len(by_size):
        return []
    rows = by_size[(by_size["probe"] == probe) & (by_size["metric"] == metric)].sort_values("n_params")
    return [SizeOnset(r.model, _get(r.onset_step), _get(r.low), _get(r.high), r.final_value, _get(r.interval),
                      r.seeds_with_onset, r.n_seeds, tuple(r.per_seed), _get(r.found_in)) for r in rows.itertuples()]


def _get(v):
    return None if absent(v) else v


def _trend(emerged: list[SizeOnset]) -> str | None:
    onsets = [s.onset for s in emerged]
    if len(onsets) < 2:
        return None
    if all(a > b for a, b in zip(onsets, onsets[1:])):
        return "earlier in larger models"
    if all(a < b for a, b in zip(onsets, onsets[1:])):
        return "later in larger models"
    return None


def findings(results: pd.DataFrame, by_size: pd.DataFrame, mirage: pd.DataFrame) -> list[Finding]:
    """The headline, from the tables: tasks that emerged (first), tasks with no transition in
    any size, tasks abrupt only under their all-or-nothing metric, mechanistic transitions."""
    if not len(by_size):
        return []
    info = by_size.drop_duplicates(["probe", "metric"]).set_index(["probe", "metric"])
    emerged, flat = [], []
    for task in tasks(results):
        if (task.probe, task.headline) not in info.index:
            continue
        per_size = _size_onsets(by_size, task.probe, task.headline)
        hit = [s for s in per_size if s.onset is not None]
        name = label(info.loc[(task.probe, task.headline)])
        if hit:
            apart = comes_apart(by_size, task)
            emerged.append(Emerged(task.name, name, tuple(hit), tuple(s for s in per_size if s.onset is None), _trend(hit),
                                   tuple(s for s in _size_onsets(by_size, task.probe, task.trained) if s.model in apart)))
        else:
            moving = [s.model for s in _size_onsets(by_size, task.probe, task.continuous) if s.onset is not None]
            flat.append(Flat(task.name, name, max(s.final for s in per_size),
                             label(info.loc[(task.probe, task.continuous)]) if moving else None, tuple(moving)))
    out: list[Finding] = emerged + ([NoTransition(tuple(flat))] if flat else [])
    if len(mirage):
        out += mirage_findings(mirage, by_size)
    for (probe, metric), row in info[(info["role"] == MECHANISM) & info["primary"].astype(bool)].iterrows():
        hit = [s for s in _size_onsets(by_size, probe, metric) if s.onset is not None]
        if hit:
            out.append(MechanismFinding(label(row), f"{probe}/{metric}", tuple(hit)))
    return out


def statistics_findings(minima: pd.DataFrame, by_size: pd.DataFrame, stages: pd.DataFrame) -> list[Finding]:
    """Per size: where the predictions came closest to each n-gram model's statistics (the KL
    curves to the training stream's n-grams, not the in-context ones), and, where a mechanism
    has an onset there too, every event in the order of its step."""
    out: list[Finding] = []
    corpus = minima[minima["metric"].str.startswith("kl/")] if len(minima) else minima
    order = by_size.drop_duplicates("model").sort_values("n_params")["model"] if len(by_size) else corpus["model"].unique()
    for model in [m for m in order if m in set(corpus["model"])]:
        closest = []
        for _, runs in corpus[corpus["model"] == model].groupby("metric", sort=True):
            at_end = runs["min_step"] == runs["high_step"]  # the lowest point is the last checkpoint
            closest.append(Closest(runs["label"].iloc[0], float(runs["min_step"].median()), tuple(runs["min_step"]),
                                   bool(runs["rises_after"].mean() > 0.5), bool(at_end.mean() > 0.5)))
        out.append(Statistics(model, tuple(closest)))
        events = [(f"closest to the {c.label.removeprefix('KL to the ')}", c.step) for c in closest
                  if not c.at_end and "bigram" in c.label]
        mine = by_size[(by_size["model"] == model) & (by_size["role"] == MECHANISM) & by_size["primary"].astype(bool)
                       & by_size["has_onset"].astype(bool)] if len(by_size) else by_size
        events += [(label(r), float(r["onset_step"])) for _, r in mine.iterrows()]
        runs = set(minima.loc[minima["model"] == model, "run"])
        bounds = stages[stages["run"].isin(runs)] if len(stages) else stages
        if len(mine) and events:
            out.append(StageOrder(model, tuple(sorted(events, key=lambda e: e[1])), _alike(bounds), len(runs)))
    return out


def _alike(bounds: pd.DataFrame) -> tuple[tuple[str, float, int], ...]:
    """Boundaries of several runs of one signal in the same checkpoint interval, once: (signal,
    their median step, how many runs have one there), by step."""
    if not len(bounds):
        return ()
    groups = bounds.groupby(["signal", "low_step", "high_step"])["boundary_step"]
    return tuple(sorted(((signal, float(steps.median()), len(steps)) for (signal, _, _), steps in groups),
                        key=lambda b: b[1]))


def mirage_findings(mirage: pd.DataFrame, by_size: pd.DataFrame) -> list[Finding]:
    """One Mirage per task flagged in some run (with how many of each size's runs), or NoMirage."""
    flagged = mirage[mirage["mirage"].astype(bool)]
    order = {m: i for i, m in enumerate(by_size.sort_values("n_params")["model"].drop_duplicates())}
    out = []
    for task, rows in flagged.groupby("task", sort=True):
        runs = mirage[mirage["task"] == task]
        where = sorted(((model, len(r), int((runs["model"] == model).sum())) for model, r in rows.groupby("model")),
                       key=lambda w: order.get(w[0], 0))
        out.append(Mirage(task, rows["label"].iloc[0], tuple(runs["continuous"].iloc[0].split("; ")), tuple(where)))
    if not len(flagged):
        out.append(NoMirage(bool(mirage["onset_step"].notna().any()), _and(sorted(set(mirage["label"])), "or")))
    return out


def _and(items: list[str], word: str = "and") -> str:
    items = [i for i in items if i]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}" if items else ""


# ---- one sentence per finding ------------------------------------------------------------
def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-")


class _Text:
    """The sentence's markup in plain text."""

    @staticmethod
    def link(text, anchor):
        return text

    @staticmethod
    def strong(text):
        return text

    em = strong


class _Html:
    """The sentence's markup in HTML (the template escapes everything else)."""

    @staticmethod
    def link(text, anchor):
        return Markup('<a href="#{}">{}</a>').format(anchor, text)

    @staticmethod
    def strong(text):
        return Markup("<b>{}</b>").format(text)

    @staticmethod
    def em(text):
        return Markup("<i>{}</i>").format(text)


def _environment(html: bool) -> Environment:
    env = Environment(loader=PackageLoader("observatory.report"), autoescape=html, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    markup = _Html if html else _Text
    env.globals |= {"link": markup.link, "strong": markup.strong, "em": markup.em, "interval": interval}
    env.filters |= {"count": count, "value": value, "slug": slug, "share": lambda x: f"{x:.0%}", "and": _and}
    return env


_TEMPLATES = {html: _environment(html).get_template("finding.j2") for html in (False, True)}


def sentence(finding: Finding, html: bool = False) -> str:
    """The finding's sentence, as plain text or as HTML (with links to the page's sections)."""
    text = _TEMPLATES[html].render(f=finding)
    return Markup(" ".join(text.split())) if html else " ".join(text.split())


def headline_text(found: list[Finding]) -> list[str]:
    """The headline as plain sentences, one per finding."""
    return [sentence(f) for f in found]
