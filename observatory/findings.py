"""What the tables say, in plain words: per task and size, did the capability emerge, at which
step (with its interval), and which transitions are abrupt only under exact match. The report's
headline and emergence map read these; so can anything else that wants a summary (they are
plain data, and `headline_text` renders them without HTML)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# A task's metrics, by the role they play in the mirage question (Schaeffer et al. 2023): an
# all-or-nothing score of the answer, and continuous ones that credit partial progress. Held-out
# items only; the `train_` twins score items the run trained on.
DISCONTINUOUS = ("exact_match", "agreement")
CONTINUOUS = ("token_accuracy", "agreement_prob", "answer_logprob", "brier")
LABELS = {"exact_match": "exact match", "agreement": "agreement", "token_accuracy": "token accuracy",
          "agreement_prob": "agreement probability", "answer_logprob": "answer log-probability",
          "brier": "Brier score"}
# mechanistic curves worth a sentence when they show a transition
MECHANISMS = {("attention", "induction/max"): "induction-head score",
              ("attention", "prev_token/max"): "previous-token-head score",
              ("loss", "icl_score"): "in-context learning score"}


def metric_label(metric: str) -> str:
    """'sorting/exact_match' -> 'exact match'; 'sorting/train_exact_match' -> 'exact match (trained items)'."""
    kind = metric.split("/")[-1]
    if kind.startswith("train_") and kind[6:] in LABELS:
        return f"{LABELS[kind[6:]]} (trained items)"
    return LABELS.get(kind, kind.replace("_", " "))


@dataclass(frozen=True)
class Task:
    name: str
    headline: str  # its discontinuous metric (full name, e.g. "sorting/exact_match"), else its continuous one
    continuous: str | None  # its first continuous metric, None if it has none

    @property
    def metrics(self) -> list[str]:
        return [self.headline] + ([self.continuous] if self.continuous else [])


def tasks(results: pd.DataFrame) -> list[Task]:
    """The capability probe's tasks with their headline and continuous metrics (held-out items)."""
    metrics = set(results.loc[results["probe"] == "capability", "metric"])
    found = []
    for name in sorted({m.split("/")[0] for m in metrics}):
        disc = [f"{name}/{k}" for k in DISCONTINUOUS if f"{name}/{k}" in metrics]
        cont = [f"{name}/{k}" for k in CONTINUOUS if f"{name}/{k}" in metrics]
        if disc:
            found.append(Task(name, disc[0], cont[0] if cont else None))
        elif cont:
            found.append(Task(name, cont[0], cont[1] if len(cont) > 1 else None))
    return found


def sizes(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model size, smallest first: model, n_params, n_params_non_embedding, seeds,
    runs, final step, tokens per step."""
    last = results.sort_values("step").groupby("run").tail(1)
    rows = []
    for model, runs in last.sort_values(["n_params", "seed"]).groupby("model", sort=False):
        rows.append({"model": model, "n_params": int(runs["n_params"].iloc[0]),
                     "n_params_non_embedding": int(runs["n_params_non_embedding"].iloc[0]),
                     "seeds": [int(s) for s in runs["seed"]], "runs": list(runs["run"]),
                     "final_step": int(runs["step"].max()),
                     "tokens_per_step": float(runs["tokens"].iloc[0] / max(runs["step"].iloc[0], 1))})
    return pd.DataFrame(rows)


def _get(row, name):
    value = row.get(name) if hasattr(row, "get") else getattr(row, name, None)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def onsets_by_size(emergence: pd.DataFrame, over_seeds: pd.DataFrame) -> pd.DataFrame:
    """One row per probe metric × size: the onset of the size (of its one run, or of its seed-mean
    curve when it has several seeds) with a 95% interval (over probe items for one run, over
    resampled seeds for several), the final value (mean over seeds) and each seed's own onset."""
    seeds_table = over_seeds.set_index(["model", "probe", "metric"]) if len(over_seeds) else None
    rows = []
    for (probe, metric, model), runs in emergence.groupby(["probe", "metric", "model"], sort=False):
        runs = runs.sort_values("seed")
        per_seed = [(int(s), float(o) if h else None) for s, h, o in zip(runs["seed"], runs["has_onset"], runs["onset_step"])]
        row = {"probe": probe, "metric": metric, "model": model, "n_params": int(runs["n_params"].iloc[0]),
               "kind": runs["kind"].iloc[0], "n_seeds": len(runs), "seeds_with_onset": int(runs["has_onset"].sum()),
               "per_seed": per_seed, "runs": list(runs["run"]), "final_value": float(runs["final_value"].mean()),
               "start_value": float(runs["start_value"].mean()), "found_in": None,
               "reasons": sorted(set(r for r in runs["reason"] if r))}
        key = (model, probe, metric)
        if len(runs) > 1 and seeds_table is not None and key in seeds_table.index:
            s = seeds_table.loc[key]
            row |= {"has_onset": bool(s["has_onset"]), "onset_step": _get(s, "onset_step"), "low": _get(s, "ci_low_step"),
                    "high": _get(s, "ci_high_step"), "interval": "seeds", "found_in": _get(s, "onset_found_in")}
        elif len(runs) > 1:  # seeds on different schedules: no seed-mean curve; the seeds' range
            onsets = [o for _, o in per_seed if o is not None]
            has = len(onsets) == len(per_seed)
            row |= {"has_onset": has, "onset_step": float(np.median(onsets)) if has else None,
                    "low": min(onsets) if has else None, "high": max(onsets) if has else None,
                    "interval": "seed range" if has else None}
        else:
            r = runs.iloc[0]
            items = r.get("ci_method") == "items"
            row |= {"has_onset": bool(r["has_onset"]), "onset_step": _get(r, "onset_step"),
                    "low": _get(r, "onset_ci_low_step") if items else None,
                    "high": _get(r, "onset_ci_high_step") if items else None,
                    "interval": "items" if items and _get(r, "onset_ci_low_step") is not None else None,
                    "found_in": _get(r, "onset_found_in")}
        if not row["has_onset"]:
            row["onset_step"] = row["low"] = row["high"] = None
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["probe", "metric", "n_params"], ignore_index=True) if len(table) else table


# ---- numbers for people ------------------------------------------------------------------
SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def count(value) -> str:
    """Steps, tokens, FLOPs, parameters: 3 significant digits with a suffix (2.39k, 1.2M, 3.47T)."""
    if value is None or not np.isfinite(value):
        return "—"
    for scale, suffix in SI:
        if abs(value) >= scale * 0.9995:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if abs(value) < 1 else f"{round(value):d}" if abs(value) < 100 else f"{value:.3g}"


def value(v) -> str:
    """A metric's value: 3 significant digits (0.0723, 0.688, 1.00, -1.23); large ones as counts."""
    if v is None or not np.isfinite(v):
        return "—"
    if abs(v) >= 1e4:
        return count(v)
    text = f"{v:#.3g}"
    return text.rstrip(".") if "e" not in text else f"{v:.2e}"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def interval(low, high) -> str:
    """'[2.32k–2.53k]'; whole steps where 3 digits would print both ends alike ('[1,388–1,391]')."""
    if _missing(low) or _missing(high):
        return ""
    if count(low) == count(high) and abs(high) >= 1000:
        return f"[{low:,.0f}–{high:,.0f}]"
    return f"[{count(low)}–{count(high)}]"


# ---- the headline ------------------------------------------------------------------------
@dataclass
class SizeOnset:
    model: str
    onset: float | None
    low: float | None
    high: float | None
    final: float
    interval: str | None  # what the interval resamples: "items", "seeds", "seed range" or None
    seeds_with_onset: int
    n_seeds: int
    per_seed: list = field(default_factory=list)
    found_in: float | None = None


@dataclass
class Finding:
    """One sentence of the headline. kind: "emerged" (task: the headline metric has a
    transition in some size), "none" (tasks with no transition in any size), "mirage",
    "mechanism"."""
    kind: str
    task: str | None
    metric: str | None = None
    emerged: list[SizeOnset] = field(default_factory=list)
    absent: list[SizeOnset] = field(default_factory=list)
    trend: str | None = None  # "earlier in larger models", "later in larger models"
    trained: list[SizeOnset] = field(default_factory=list)  # on trained items, where that comes apart (grokking)
    continuous_note: str | None = None
    items: list = field(default_factory=list)  # "none": [(task, metric label, best final, note)]; "mirage": [(size, k, n)]


def _size_onsets(by_size: pd.DataFrame, probe: str, metric: str) -> list[SizeOnset]:
    rows = by_size[(by_size["probe"] == probe) & (by_size["metric"] == metric)].sort_values("n_params")
    return [SizeOnset(r.model, _get(r, "onset_step"), _get(r, "low"), _get(r, "high"), r.final_value, _get(r, "interval"),
                      r.seeds_with_onset, r.n_seeds, r.per_seed, _get(r, "found_in")) for r in rows.itertuples()]


def _trend(emerged: list[SizeOnset]) -> str | None:
    onsets = [s.onset for s in emerged]
    if len(onsets) < 2:
        return None
    if all(a > b for a, b in zip(onsets, onsets[1:])):
        return "earlier in larger models"
    if all(a < b for a, b in zip(onsets, onsets[1:])):
        return "later in larger models"
    return None


def trained_gap(by_size: pd.DataFrame, task: Task, ratio: float = 1.5) -> tuple[str | None, list[SizeOnset]]:
    """The headline metric on trained items (its `train_` twin) and its onsets in the sizes where
    it comes apart from the held-out one: an onset there, and none on held-out items or one
    `ratio` times later (memorization before generalization: grokking)."""
    twin = f"{task.name}/train_{task.headline.split('/')[1]}"
    held = {s.model: s for s in _size_onsets(by_size, "capability", task.headline)}
    apart = [s for s in _size_onsets(by_size, "capability", twin) if s.onset is not None and
             (s.model not in held or held[s.model].onset is None or held[s.model].onset > ratio * s.onset)]
    return (twin if apart else None), apart


def findings(results: pd.DataFrame, by_size: pd.DataFrame, mirage: pd.DataFrame) -> list[Finding]:
    """The headline's sentences, from the tables: tasks that emerged (first), tasks with no
    transition in any size, tasks abrupt only under exact match, mechanistic transitions."""
    emerged, none = [], Finding("none", None)
    for task in tasks(results):
        per_size = _size_onsets(by_size, "capability", task.headline)
        if not per_size:
            continue
        hit = [s for s in per_size if s.onset is not None]
        cont = [s for s in _size_onsets(by_size, "capability", task.continuous) if s.onset is not None] \
            if task.continuous else []
        cont_note = (f"its {metric_label(task.continuous)} has a transition in "
                     f"{', '.join(s.model for s in cont)}") if cont else None
        if hit:
            emerged.append(Finding("emerged", task.name, task.headline, hit, [s for s in per_size if s.onset is None],
                                   _trend(hit), trained=trained_gap(by_size, task)[1]))
        else:
            none.items.append((task.name, metric_label(task.headline), max(s.final for s in per_size), cont_note))
    out = emerged + ([none] if none.items else [])
    if len(mirage):
        flagged = mirage[mirage["mirage"].astype(bool)]
        order = {m: i for i, m in enumerate(by_size.sort_values("n_params")["model"].drop_duplicates())}
        for task, rows in flagged.groupby("task", sort=True):
            runs = mirage[mirage["task"] == task]
            per = [(model, int(len(r)), int((runs["model"] == model).sum()))
                   for model, r in rows.groupby("model", sort=False)]
            out.append(Finding("mirage", task, f"{task}/exact_match", items=sorted(per, key=lambda p: order.get(p[0], 0))))
        if not len(flagged):
            compared = mirage["exact_match_onset"].notna().any() if "exact_match_onset" in mirage else False
            out.append(Finding("mirage", None, items=[] if compared else ["no exact-match transition"]))
    for (probe, metric), label in MECHANISMS.items():
        hit = [s for s in _size_onsets(by_size, probe, metric) if s.onset is not None]
        if hit:
            out.append(Finding("mechanism", None, f"{probe}/{metric}", hit, trend=label))
    return out


def size_onset_text(s: SizeOnset, with_final: bool = True) -> str:
    """'100k at step 2.39k [2.32k–2.53k] → 0.287'."""
    text = f"{s.model} at step {count(s.onset)}"
    if s.low is not None:
        text += f" {interval(s.low, s.high)}"
    if with_final:
        text += f" → {value(s.final)}"
    if s.interval == "seeds" and s.found_in is not None and s.found_in < 0.9:
        text += f" (in {s.found_in:.0%} of seed resamples)"
    return text


def absent_text(s: SizeOnset) -> str:
    text = f"{s.model} ({value(s.final)} at the end"
    alone = [(seed, o) for seed, o in s.per_seed if o is not None]
    if alone:
        text += "; " + ", ".join(f"seed {seed} alone at {count(o)}" for seed, o in alone)
    return text + ")"


def trained_text(f: Finding) -> str:
    """'on trained items already in 1l-d128 at step 1.76k [1.55k–1.86k] → 1.00'."""
    return "on trained items already in " + ", ".join(size_onset_text(s) for s in f.trained)


def mirage_text(f: Finding) -> str:
    if f.task is None and f.items:
        return "No exact-match transition in any run, so none to compare with the continuous metrics (the mirage question)."
    if f.task is None:
        return ("No task looks abrupt only under exact match: wherever exact match has a transition, a continuous "
                "metric of the same task has one at least half as abrupt.")
    where = ", ".join(f"{model} ({k} of {n} seed{'s' if n > 1 else ''})" if n > 1 else model for model, k, n in f.items)
    return (f"{f.task} looks abrupt only under exact match in {where}: its token accuracy and answer "
            "log-probability rise more gradually there (the mirage question).")


def headline_text(found: list[Finding]) -> list[str]:
    """The headline as plain sentences (the HTML page renders the same findings with links)."""
    lines = []
    for f in found:
        if f.kind == "emerged":
            text = f"{f.task} ({metric_label(f.metric)}) emerged in " + ", ".join(size_onset_text(s) for s in f.emerged)
            if f.absent:
                text += "; not in " + ", ".join(absent_text(s) for s in f.absent)
            if f.trained:
                text += "; " + trained_text(f)
            lines.append(text + (f"; {f.trend}." if f.trend else "."))
        elif f.kind == "none":
            lines.append("No transition in any size: " + "; ".join(
                f"{task} ({label}, at most {value(best)} at the end{', though ' + note if note else ''})"
                for task, label, best, note in f.items) + ".")
        elif f.kind == "mirage":
            lines.append(mirage_text(f))
        elif f.kind == "mechanism":
            lines.append(f"The {f.trend} ({f.metric}) has a transition in "
                         + ", ".join(size_onset_text(s) for s in f.emerged) + ".")
    return lines
