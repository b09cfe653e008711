"""When does a capability appear? Onset, width and abruptness of each curve (run × probe
metric) on a log-step axis, a sigmoid fit with bootstrap intervals, and the same curves
across scale and across metrics of one task (the "mirage" question).

Intervals: a curve that is a mean over probe items is resampled over its items (the same
resampled items at every checkpoint) and its onset re-detected; other curves get a residual
bootstrap of the sigmoid midpoint; several seeds of one size are resampled over seeds.

x = log10(step + 1): checkpoints are log-spaced, and so are the transitions we look for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from observatory.metrics import CURVE_ROLES, IDENTITY_COLUMNS, min_rise
from observatory.store import flops_6nd

CENTERS, WIDTHS = 60, 30  # sigmoid fit grid


@dataclass
class Onset:
    has_onset: bool
    reason: str  # why there is no onset ("" when there is one)
    onset_step: float | None = None  # where the curve last crosses `fraction` of its rise (log-interpolated)
    width_decades: float | None = None  # from 10% to 90% of the rise, in decades of steps
    rise_start_step: float | None = None  # where the curve last crosses 10% of its rise: the rise begins
    rise_end_step: float | None = None  # and 90%: the rise is done
    center_step: float | None = None  # the sigmoid fit's midpoint
    steepest_step: float | None = None  # where it improves fastest per decade of steps (see `steepest`)
    ci_low_step: float | None = None  # 95% bootstrap interval of the midpoint
    ci_high_step: float | None = None
    ci_method: str | None = None  # "items" (resampled probe items) or "residuals" (resampled fit residuals)
    onset_ci_low_step: float | None = None  # 95% interval of onset_step over resampled items
    onset_ci_high_step: float | None = None
    onset_found_in: float | None = None  # share of item resamples that still show an onset
    abruptness: float | None = None  # 1 / width_decades of the fit: rises per decade
    r2: float | None = None
    start_value: float | None = None
    final_value: float | None = None


def curves_with_onsets(results: pd.DataFrame) -> pd.DataFrame:
    """The rows whose curves have onsets: every role but the stage signals and their sampler's
    detail (those have change points: observatory/analysis/stages.py)."""
    return results[results["role"].isin(CURVE_ROLES)]


def headline_metrics(results: pd.DataFrame) -> list[tuple[str, str]]:
    """The curves worth a chart, and that an adaptive sweep locates: the primary metric of each
    task's role (both splits), and of each probe (the strongest heads, the ICL score, the
    held-out loss, the weight norm, the best linear probe)."""
    rows = curves_with_onsets(results)
    return sorted(set(rows.loc[rows["primary"].astype(bool), ["probe", "metric"]].itertuples(index=False, name=None)))


def curve_spec(curve: pd.DataFrame) -> tuple[float, float]:
    """(the sign that turns the curve "better upwards", the smallest rise that counts as an
    onset), from the spec its probe declared (observatory/metrics.py), never from its name."""
    first = curve.iloc[0]
    return (1.0 if first["higher_is_better"] else -1.0), min_rise(first["low"], first["high"])


def sampling_noise(stderr) -> float:
    """The standard error of a curve's rise (final minus start, each the median of two
    checkpoints) from the sampling errors of its values; 0 where they declare none."""
    se = np.asarray(stderr, dtype=float) if stderr is not None else np.zeros(0)
    if not len(se) or not np.isfinite(se).any():
        return 0.0
    se = np.nan_to_num(se)
    return float(np.hypot(np.median(se[:2]), np.median(se[-2:])))


def fit_sigmoid(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least-squares y ≈ a + b·σ((x - c) / w) over a grid of (c, w), with a and b in closed
    form for each: returns (a, b, c, w, sse). Deterministic, no optimizer to tune."""
    span = max(float(x.max() - x.min()), 1e-9)
    c, w = np.meshgrid(np.linspace(x.min(), x.max(), CENTERS), np.logspace(-2.5, 0, WIDTHS) * span)
    c, w = c.ravel()[:, None], w.ravel()[:, None]  # (G, 1)
    s = 1 / (1 + np.exp(-(x[None, :] - c) / w))  # (G, n)
    s_mean = s.mean(1, keepdims=True)
    var = ((s - s_mean) ** 2).sum(1)
    b = ((s - s_mean) * (y - y.mean())[None, :]).sum(1) / np.maximum(var, 1e-12)
    a = y.mean() - b * s_mean[:, 0]
    sse = ((a[:, None] + b[:, None] * s - y[None, :]) ** 2).sum(1)
    i = int(np.argmin(sse))
    return float(a[i]), float(b[i]), float(c[i, 0]), float(w[i, 0]), float(sse[i])


def step_noise(y: np.ndarray) -> float:
    """Robust σ of a curve's checkpoint-to-checkpoint steps (1.4826 · MAD of its differences)."""
    d = np.diff(y)
    return 1.4826 * float(np.median(np.abs(d - np.median(d))))


def steepest(x: np.ndarray, y: np.ndarray) -> float:
    """The middle (on the x axis) of the checkpoint interval where y rises fastest per unit of x.
    A curve that moves in stages (a loss that falls early, rests on a plateau, then drops at a
    phase change) has its half-way point wherever the stages' sizes put it; this is the
    sharpest stage, e.g. the loss drop of a phase change (Olsson et al. 2022)."""
    i = int(np.argmax(np.diff(y) / np.diff(x)))
    return float((x[i] + x[i + 1]) / 2)


def first_stays_above(x: np.ndarray, normalized: np.ndarray, level: float) -> float | None:
    """Where the curve crosses `level` for the last time, interpolated linearly between the
    checkpoints on either side: from there on every checkpoint is at or above it."""
    above = normalized >= level
    for i in range(len(x)):
        if above[i:].all():
            if i == 0:
                return float(x[0])
            x0, x1, y0, y1 = x[i - 1], x[i], normalized[i - 1], normalized[i]
            return float(x0 + (level - y0) / (y1 - y0) * (x1 - x0))
    return None


def detect_onset(steps, values, fraction: float = 0.5, min_snr: float = 4.0, min_r2: float = 0.8,
                 min_rise: float = 0.0, n_boot: int = 200, seed: int = 0, stderr=None) -> Onset:
    """Onset of a rising curve, or the reason there is none (flat, noisy, decreasing). The
    rise must exceed `min_rise` and `min_snr` times the noise: the larger of the curve's
    checkpoint-to-checkpoint scatter and the sampling error of the rise (`stderr`: each
    value's standard error, e.g. over probe items), so a stepwise curve of a few items is
    not mistaken for a transition."""
    x = np.log10(np.asarray(steps, dtype=float) + 1)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 5:
        return Onset(False, f"only {len(y)} checkpoints")
    start, final = float(np.median(y[:2])), float(np.median(y[-2:]))
    rise = final - start
    noise = max(step_noise(y), sampling_noise(None if stderr is None else np.asarray(stderr, dtype=float)[ok])) + 1e-12
    if rise <= 0:
        return Onset(False, "does not rise", start_value=start, final_value=final)
    if rise < min_rise:
        return Onset(False, f"rise {rise:.3g} is below {min_rise}", start_value=start, final_value=final)
    if rise < min_snr * noise:
        return Onset(False, f"rise {rise:.3g} is within noise ({noise:.2g})", start_value=start, final_value=final)
    a, b, c, w, sse = fit_sigmoid(x, y)
    r2 = 1 - sse / float(((y - y.mean()) ** 2).sum())
    if b <= 0 or r2 < min_r2:
        return Onset(False, f"no sigmoid transition (r2 {r2:.2f})", r2=r2, start_value=start, final_value=final)
    normalized = (y - start) / rise
    onset_x = first_stays_above(x, normalized, fraction)
    lo, hi = first_stays_above(x, normalized, 0.1), first_stays_above(x, normalized, 0.9)
    if onset_x is None:
        return Onset(False, f"never stays above {fraction:.0%} of its rise", r2=r2, start_value=start, final_value=final)
    ci = bootstrap_center(x, y, a, b, c, w, n_boot, seed) if n_boot else None
    width = 2 * math.log(9) * w  # 10% to 90% of a logistic, in decades
    return Onset(
        True, "", onset_step=10**onset_x - 1, width_decades=(hi - lo) if lo is not None and hi is not None else None,
        rise_start_step=10**lo - 1 if lo is not None else None, rise_end_step=10**hi - 1 if hi is not None else None,
        center_step=10**c - 1, steepest_step=10 ** steepest(x, y) - 1, ci_low_step=10 ** ci[0] - 1 if ci else None,
        ci_high_step=10 ** ci[1] - 1 if ci else None, ci_method="residuals" if ci else None, abruptness=1 / width,
        r2=r2, start_value=start, final_value=final,
    )


def bootstrap_center(x, y, a, b, c, w, n_boot: int, seed: int) -> tuple[float, float]:
    """95% interval of the sigmoid midpoint by resampling the fit's residuals."""
    fitted = a + b / (1 + np.exp(-(x - c) / w))
    residuals = y - fitted
    rng = np.random.default_rng(seed)
    centers = [fit_sigmoid(x, fitted + rng.choice(residuals, len(residuals)))[2] for _ in range(n_boot)]
    return float(np.percentile(centers, 2.5)), float(np.percentile(centers, 97.5))


def resampled_onsets(steps, columns: np.ndarray, weights: np.ndarray, n_boot: int, seed: int = 0,
                     **detect) -> tuple[np.ndarray, np.ndarray]:
    """Onset and sigmoid midpoint (nan where none) of the weighted mean of `columns` (steps ×
    K curves: items or seeds), each time over K columns drawn with replacement."""
    rng = np.random.default_rng(seed)
    onsets, centers = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    for b in range(n_boot):
        pick = rng.integers(0, columns.shape[1], columns.shape[1])
        again = detect_onset(steps, columns[:, pick] @ weights[pick] / weights[pick].sum(), n_boot=0, **detect)
        if again.has_onset:
            onsets[b], centers[b] = again.onset_step, again.center_step
    return onsets, centers


def interval(samples: np.ndarray) -> tuple[float | None, float | None]:
    """95% percentile interval of the finite samples."""
    found = samples[np.isfinite(samples)]
    return (float(np.percentile(found, 2.5)), float(np.percentile(found, 97.5))) if len(found) else (None, None)


def item_bootstrap(onset: Onset, steps, item_values: np.ndarray, weights: np.ndarray, n_boot: int,
                   **detect) -> Onset:
    """`onset` with its intervals from resampling probe items (item_values: steps × items)."""
    onsets, centers = resampled_onsets(steps, item_values, weights, n_boot, **detect)
    onset.ci_low_step, onset.ci_high_step = interval(centers)
    onset.onset_ci_low_step, onset.onset_ci_high_step = interval(onsets)
    onset.onset_found_in, onset.ci_method = float(np.isfinite(onsets).mean()), "items"
    return onset


def _item_curves(items: pd.DataFrame | None) -> dict:
    """(probe, metric) -> (steps × items values, items' weights) from one run's item results."""
    if items is None or not len(items):
        return {}
    curves = {}
    for key, rows in items.groupby(["probe", "metric"], sort=False, observed=True):
        grid = rows.pivot_table(index="step", columns="item", values="value").dropna(axis=1)
        weights = rows.drop_duplicates("item").set_index("item")["weight"].reindex(grid.columns)
        curves[key] = (grid, weights.to_numpy(dtype=float))
    return curves


def emergence_table(results: pd.DataFrame, item_results: Callable[[str], pd.DataFrame | None] | None = None,
                    fraction: float = 0.5, n_boot: int = 100) -> pd.DataFrame:
    """One row per run × probe metric with its onset (steps, tokens, FLOPs) or the reason for
    none. `item_results(run)` (that run's rows of item_results) gives the curves that are item
    means an item bootstrap; it is called once per run, so memory stays flat in the runs."""
    rows = []
    for run, run_results in results.groupby("run", sort=True):
        item_curves = _item_curves(item_results(run) if item_results else None)
        for (probe, metric), curve in run_results.groupby(["probe", "metric"], sort=True):
            rows.append(_onset_row(curve.sort_values("step"), item_curves.get((probe, metric)), fraction, n_boot))
    return pd.DataFrame(rows)


def _onset_row(curve: pd.DataFrame, by_items: tuple | None, fraction: float, n_boot: int) -> dict:
    """One curve's emergence row; `by_items`: its (steps × items grid, weights) if an item mean."""
    first = curve.iloc[0]
    probe, metric = first["probe"], first["metric"]
    sign, rise = curve_spec(curve)
    stderr = curve["stderr"].to_numpy()
    onset = detect_onset(curve["step"], sign * curve["value"].to_numpy(), fraction, min_rise=rise, stderr=stderr,
                         n_boot=0 if by_items else n_boot)
    if by_items and onset.has_onset:
        grid, weights = by_items
        stderr = curve.set_index("step")["stderr"].reindex(grid.index).to_numpy()
        onset = item_bootstrap(onset, grid.index.to_numpy(), sign * grid.to_numpy(), weights, n_boot,
                               fraction=fraction, min_rise=rise, stderr=stderr)
    row = {"experiment": first["experiment"], "run": first["run"], "model": first["model"], "seed": int(first["seed"]),
           "n_params": int(first["n_params"]), "probe": probe, "metric": metric, "kind": first["kind"],
           "chance": first["chance"]} | asdict(onset) | {"onset_tokens": float("nan"), "onset_flops_6nd": float("nan")}
    if onset.has_onset:
        per_step = curve["tokens"].iloc[-1] / max(curve["step"].iloc[-1], 1)
        row["onset_tokens"] = onset.onset_step * per_step
        row["onset_flops_6nd"] = flops_6nd(first["n_params_non_embedding"], row["onset_tokens"])
    row["start_value"], row["final_value"] = float(curve["value"].iloc[0]), float(curve["value"].iloc[-1])
    return row | {c: first[c] for c in IDENTITY_COLUMNS if c in first}  # what the curve is


SEED_COLUMNS = ["model", "n_params", "probe", "metric", "n_seeds", "has_onset", "reason", "onset_step", "ci_low_step",
                "ci_high_step", "onset_found_in"]


def onsets_over_seeds(results: pd.DataFrame, fraction: float = 0.5, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per size × probe metric with two or more seeds: the onset of the seed-mean curve and a
    95% interval by resampling the seeds (with replacement) and re-detecting the onset."""
    rows = []
    for (model, probe, metric), curves in results.groupby(["model", "probe", "metric"], sort=True):
        grid = curves.pivot_table(index="step", columns="seed", values="value").dropna()
        if grid.shape[1] < 2:
            continue
        sign, rise = curve_spec(curves)
        steps, values = grid.index.to_numpy(), sign * grid.to_numpy()  # (steps, seeds)
        k = values.shape[1]
        within = curves.pivot_table(index="step", columns="seed", values="stderr", dropna=False).reindex(grid.index)
        # the seed mean's error: the scatter between seeds, and never less than the items' own
        stderr = np.maximum(values.std(1, ddof=1) / np.sqrt(k), np.sqrt(np.nansum(within.to_numpy() ** 2, 1)) / k)
        onset = detect_onset(steps, values.mean(1), fraction, min_rise=rise, stderr=stderr, n_boot=0)
        resampled = resampled_onsets(steps, values, np.ones(k), n_boot if onset.has_onset else 0,
                                     seed, fraction=fraction, min_rise=rise, stderr=stderr)[0]
        low, high = interval(resampled)
        rows.append({"model": model, "n_params": int(curves["n_params"].iloc[0]), "probe": probe, "metric": metric,
                     "n_seeds": grid.shape[1], "has_onset": onset.has_onset, "reason": onset.reason,
                     "onset_step": onset.onset_step, "ci_low_step": low, "ci_high_step": high,
                     "onset_found_in": float(np.isfinite(resampled).mean()) if len(resampled) else None})
    return pd.DataFrame(rows, columns=SEED_COLUMNS)
