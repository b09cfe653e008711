"""Tables built from the results and the onsets, read by the report and anything else that
wants them: the capability tasks and their metrics, the sizes, onsets per size, final values
across scale, the mirage question, and the LLC estimates the sampler flags. Every table
finds its metrics by their declared identity (observatory/metrics.py), never by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from observatory.analysis.stages import llc_estimates
from observatory.metrics import ALL_OR_NOTHING, CONTINUOUS, IDENTITY_COLUMNS, NGRAM, SPEC_COLUMNS, TASK_ROLES


def metric_info(results: pd.DataFrame) -> pd.DataFrame:
    """(probe, metric) -> what the metric is: its spec and identity (from its first row)."""
    columns = [c for c in [*SPEC_COLUMNS, *IDENTITY_COLUMNS] if c != "stderr"]
    return results.drop_duplicates(["probe", "metric"]).set_index(["probe", "metric"])[columns]


@dataclass(frozen=True)
class Task:
    name: str
    probe: str  # the probe that scores it
    headline: str  # its all-or-nothing metric on held-out items (none: its primary continuous one)
    continuous: str | None  # its primary continuous metric on held-out items
    trained: str | None  # the headline metric on items from the training stream
    others: tuple[str, ...]  # its other metrics, both splits

    @property
    def metrics(self) -> list[str]:
        return [self.headline] + ([self.continuous] if self.continuous else [])


def tasks(results: pd.DataFrame) -> list[Task]:
    """The tasks scored in the results, each with its headline and continuous metrics."""
    rows = results[results["role"].isin(TASK_ROLES) & results["task"].notna()]
    rows = rows.drop_duplicates(["probe", "metric"])[["probe", "metric", "task", "role", "split", "label", "primary"]]
    found = []
    for name, mine in rows.groupby("task", sort=True):  # a task is scored by one probe
        held = mine[mine["split"] == "heldout"].sort_values(["primary", "metric"], ascending=[False, True])
        whole = list(held.loc[held["role"] == ALL_OR_NOTHING, "metric"])
        partial = list(held.loc[held["role"] == CONTINUOUS, "metric"])
        if not whole and not partial:
            continue
        headline = whole[0] if whole else partial.pop(0)
        first = held.set_index("metric").loc[headline]
        twin = mine[(mine["split"] == "train") & (mine["role"] == first["role"]) & (mine["label"] == first["label"])]
        continuous = partial[0] if partial else None
        others = tuple(sorted(set(mine["metric"]) - {headline, continuous}))
        found.append(Task(str(name), mine["probe"].iloc[0], headline, continuous,
                          twin["metric"].iloc[0] if len(twin) else None, others))
    return found


def comes_apart(by_size: pd.DataFrame, task: Task, ratio: float = 1.5) -> list[str]:
    """The sizes where the task's headline metric on trained items has an onset and the held-out
    one has none, or one `ratio` times later (memorization before generalization: grokking)."""
    if task.trained is None or not len(by_size):
        return []
    onset = {(m, model): o if h else None for m, model, h, o in
             zip(by_size["metric"], by_size["model"], by_size["has_onset"], by_size["onset_step"])}
    models = by_size.sort_values("n_params")["model"].drop_duplicates()
    return [model for model in models if (trained := onset.get((task.trained, model))) is not None and
            ((held := onset.get((task.headline, model))) is None or held > ratio * trained)]


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
        rows.append(row | {c: runs[c].iloc[0] for c in IDENTITY_COLUMNS})
    table = pd.DataFrame(rows)
    return table.sort_values(["probe", "metric", "n_params"], ignore_index=True) if len(table) else table


def scale_table(results: pd.DataFrame, emergence: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per capability and size (mean over seeds): final value, onset, and for accuracy-like
    metrics the smallest size whose final value reaches `threshold`."""
    last = results[results["step"] == results.groupby("run")["step"].transform("max")]
    finals = last.groupby(["probe", "metric", "model", "n_params"], as_index=False)["value"].mean()
    at_onset = ["onset_step", "onset_tokens", "onset_flops_6nd"]
    onsets = emergence.groupby(["probe", "metric", "model"], as_index=False)[at_onset].mean() \
        if "onset_tokens" in emergence else emergence[["probe", "metric", "model"]].drop_duplicates()
    table = finals.rename(columns={"value": "final_value"}).merge(onsets, on=["probe", "metric", "model"], how="left")
    accuracies = set(map(tuple, results.loc[results["kind"] == "accuracy", ["probe", "metric"]].drop_duplicates().to_numpy()))
    smallest = {}
    for (probe, metric), rows in table.groupby(["probe", "metric"]):
        if (probe, metric) in accuracies:
            reached = rows[rows["final_value"] >= threshold].sort_values("n_params")
            smallest[(probe, metric)] = reached["model"].iloc[0] if len(reached) else None
    table["smallest_size_reaching_threshold"] = [smallest.get((p, m)) for p, m in zip(table["probe"], table["metric"])]
    return table.sort_values(["probe", "metric", "n_params"], ignore_index=True)


MIRAGE_COLUMNS = ["run", "model", "task", "metric", "label", "onset_step", "abruptness", "continuous",
                  "continuous_with_onset", "first_continuous_onset", "sharpest_continuous",
                  "sharpest_continuous_abruptness", "mirage"]


def mirage_table(emergence: pd.DataFrame, sharp: float = 0.5) -> pd.DataFrame:
    """The mirage question (Schaeffer et al. 2023), per run and task, on held-out items: is the
    all-or-nothing metric's transition sharper than every continuous metric's? Flagged where it
    has an onset and no continuous metric of the task has a transition at least `sharp` times as
    abrupt. `continuous`: the metrics it is compared with; `first_continuous_onset`: the earliest
    of their onsets."""
    rows = []
    scored = emergence[emergence["role"].isin(TASK_ROLES) & (emergence["split"] == "heldout")] if len(emergence) else []
    for (run, task), group in (scored.groupby(["run", "task"], sort=True) if len(scored) else []):
        whole = group[group["role"] == ALL_OR_NOTHING]
        if not len(whole):
            continue
        top = whole.iloc[0]
        partial = group[group["role"] == CONTINUOUS].sort_values(["primary", "metric"], ascending=[False, True])
        moved = partial[partial["has_onset"].astype(bool)]
        sharper = moved[moved["abruptness"] >= sharp * top["abruptness"]] if top["has_onset"] else moved.iloc[:0]
        sharpest = moved.loc[moved["abruptness"].idxmax()] if len(moved) else None
        rows.append({"run": run, "model": top["model"], "task": task, "metric": top["metric"], "label": top["label"],
                     "onset_step": top["onset_step"], "abruptness": top["abruptness"],
                     "continuous": "; ".join(partial["label"]), "continuous_with_onset": "; ".join(moved["label"]),
                     "first_continuous_onset": moved["onset_step"].min() if len(moved) else None,
                     "sharpest_continuous": None if sharpest is None else sharpest["label"],
                     "sharpest_continuous_abruptness": None if sharpest is None else sharpest["abruptness"],
                     "mirage": bool(top["has_onset"] and not len(sharper))})
    return pd.DataFrame(rows, columns=MIRAGE_COLUMNS)


UNHEALTHY_COLUMNS = ["run", "step", "signal", "value", "drift", "diverged", "negative"]


def unhealthy_table(results: pd.DataFrame) -> pd.DataFrame:
    """The LLC estimates the sampler flags, with why."""
    estimates = llc_estimates(results)
    bad = estimates[estimates["healthy"] < 0.5].rename(columns={"mean": "value"})
    return bad[UNHEALTHY_COLUMNS].reset_index(drop=True)


MINIMA_COLUMNS = ["run", "model", "seed", "probe", "metric", "label", "min_step", "low_step", "high_step", "start_value",
                  "min_value", "final_value", "falls_to_it", "rises_after"]


def ngram_minima(results: pd.DataFrame, z: float = 2.0) -> pd.DataFrame:
    """Per run and n-gram metric (role NGRAM, observatory/probes/ngram.py): the probed step where
    the curve is lowest, between the probed checkpoints either side of it (low_step, high_step);
    `falls_to_it` / `rises_after`: the start / the end lies above the minimum by more than `z`
    standard errors of the difference (a U-shape has both; a curve still falling at the end has
    the first alone)."""
    rows = []
    for (run, probe, metric), curve in results[results["role"] == NGRAM].groupby(["run", "probe", "metric"], sort=True):
        curve = curve.sort_values("step")
        steps, v, se = curve["step"].to_numpy(), curve["value"].to_numpy(), curve["stderr"].fillna(0).to_numpy()
        i = int(np.argmin(v))
        above = [bool(v[j] - v[i] > z * math.hypot(se[j], se[i])) for j in (0, len(v) - 1)]  # the start, the end
        rows.append({"run": run, "model": curve["model"].iloc[0], "seed": curve["seed"].iloc[0], "probe": probe,
                     "metric": metric, "label": curve["label"].iloc[0], "min_step": int(steps[i]),
                     "low_step": int(steps[max(i - 1, 0)]), "high_step": int(steps[min(i + 1, len(steps) - 1)]),
                     "start_value": v[0], "min_value": v[i], "final_value": v[-1], "falls_to_it": above[0],
                     "rises_after": above[1]})
    return pd.DataFrame(rows, columns=MINIMA_COLUMNS)
