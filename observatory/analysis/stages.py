"""Developmental stages of a run, found without choosing a metric in advance: change points of
the LLC curve, and turning points of the "essential dynamics" trajectory (the PCA of the
model's outputs on a fixed probe set across checkpoints; Hoogland et al. 2024).

Both signals are read on x = log10(step + 1), the axis the checkpoints are spaced on, and
segmented by `ruptures` (PELT, exact for a penalized cost) into pieces each fitted by a straight
line in x: a boundary is where the signal stops following one line, a jump or a change of
slope (for the LLC: a peak, the start or end of a fall; for the trajectory: a change of
direction or speed). The penalty for a boundary is PENALTY × (parameters per segment) ×
σ² × log n, with σ the signal's noise: for the LLC the larger of the chains' standard error
and the checkpoint-to-checkpoint scatter, for the trajectory the scatter, never below
NOISE_FLOOR of the signal's range. A flat or noisy signal gives no boundary
(tests/test_devinterp.py).

Each boundary lies between two probed checkpoints (`low_step`, `high_step`); `boundary_step`
is their midpoint on the log axis. For the LLC, chains are resampled at every checkpoint
(`n_boot` times) and the boundary re-detected; `found_in` is the share of resamples with a
boundary in the same checkpoint interval or the next one either side; a boundary found in
fewer than MIN_FOUND_IN of them is dropped, and the interval widens to hold the central 95%
of the re-detected boundaries. Unhealthy LLC estimates take no part.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from observatory.analysis.emergence import step_noise
from observatory.metrics import LLC_HEALTH, SAMPLER, STAGE_SIGNAL, TASK_ROLES, component_name

PENALTY = 3.0  # × BIC's log n per parameter
NOISE_FLOOR = 0.02  # σ is at least this share of the signal's range
MIN_SIZE = 2  # checkpoints per segment
MIN_POINTS = 8  # fewer checkpoints: no stage analysis
MIN_FOUND_IN = 0.5  # an LLC boundary found in fewer of the chains' bootstrap resamples is dropped
ED_COMPONENTS = 3  # principal components of the trajectory that are segmented
ED_PROBE, ED_METRIC = "essential_dynamics", "logprob"
LLC_PROBE = "llc"


@dataclass
class Boundary:
    run: str
    signal: str  # "llc", "llc/<component>" or "essential_dynamics"
    boundary_step: float  # the midpoint (log axis) of the checkpoint interval holding the boundary
    low_step: float  # the interval (widened by the bootstrap where there is one)
    high_step: float
    interval_steps: float  # the checkpoint spacing there: high - low before widening
    found_in: float | None = None  # share of bootstrap resamples that find it (LLC)


def _linear_cost():
    import ruptures as rpt

    class PiecewiseLinear(rpt.base.BaseCost):
        """Sum over the signal's columns of the squared residuals of a least-squares line in x
        (the last column of the fitted array), from cumulative sums: O(1) per segment."""

        model = "piecewise_linear"
        min_size = MIN_SIZE

        def fit(self, signal):
            self.signal = signal
            y, x = signal[:, :-1], signal[:, -1:]
            x = x - x.mean()  # better conditioned sums
            parts = [np.ones_like(x), x, x * x, y, x * y, y * y]
            self.sums = [np.concatenate([np.zeros((1, p.shape[1])), np.cumsum(p, 0)]) for p in parts]
            return self

        def error(self, start, end):
            if end - start < self.min_size:
                raise rpt.exceptions.NotEnoughPoints
            n, sx, sxx, sy, sxy, syy = (c[end] - c[start] for c in self.sums)
            centered_xx = sxx - sx * sx / n
            centered_xy = sxy - sx * sy / n
            sse = syy - sy * sy / n - np.where(centered_xx > 1e-12, centered_xy**2 / np.maximum(centered_xx, 1e-12), 0.0)
            return float(np.maximum(sse, 0.0).sum())

    return PiecewiseLinear()


def change_points(steps, signal, noise: float | None = None) -> list[int]:
    """Indices k (into the sorted `steps`) where a new segment starts: the boundary lies between
    steps[k - 1] and steps[k]. `signal` is (n,) or (n, d); `noise` its σ (None: the scatter)."""
    import ruptures as rpt

    x = np.log10(np.asarray(steps, dtype=float) + 1)
    if len(x) < MIN_POINTS:
        return []
    y = np.asarray(signal, dtype=float).reshape(len(x), -1)
    ok = np.isfinite(y).all(1)
    x, y = x[ok], y[ok]
    index = np.flatnonzero(ok)
    if len(x) < MIN_POINTS:
        return []
    spread = float(np.sqrt(((y.max(0) - y.min(0)) ** 2).sum()))
    if spread == 0:
        return []
    scatter = math.sqrt(sum(step_noise(col) ** 2 for col in y.T) / 2)  # a difference has twice a value's variance
    sigma = max(noise or 0.0, scatter, NOISE_FLOOR * spread)
    penalty = PENALTY * 2 * y.shape[1] * sigma**2 * math.log(len(x))
    algo = rpt.Pelt(custom_cost=_linear_cost(), min_size=MIN_SIZE, jump=1).fit(np.column_stack([y, x]))
    return [int(index[k]) for k in algo.predict(pen=penalty)[:-1]]


def _boundary(run, signal, steps, k, found_in=None, samples=()) -> Boundary:
    low, high = float(steps[k - 1]), float(steps[k])
    middle = 10 ** ((math.log10(low + 1) + math.log10(high + 1)) / 2) - 1
    lo, hi = low, high
    if len(samples):
        lo = min(lo, float(np.percentile(samples, 2.5)))
        hi = max(hi, float(np.percentile(samples, 97.5)))
    return Boundary(run, signal, middle, lo, hi, high - low, found_in)


# ---- LLC ----------------------------------------------------------------------------------
def llc_estimates(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run × step × LLC estimate (the whole model's, each component's), from the
    metrics' identity: signal ("llc", "llc/L1H0"), mean, stderr, the sampler's health (drift,
    diverged, negative, healthy, init_loss) and the chains' values in chain order."""
    columns = ["run", "step", "signal", "mean", "stderr", *LLC_HEALTH, "chains"]
    rows = results[results["probe"] == LLC_PROBE]
    if not len(rows):
        return pd.DataFrame(columns=columns)
    keys = ["run", "step", "layer", "head"]
    rows = rows.assign(layer=rows["layer"].fillna(-1), head=rows["head"].fillna(-1))  # -1: none (groupable)
    estimates = rows[rows["role"] == STAGE_SIGNAL].set_index(keys)[["value", "stderr"]].rename(columns={"value": "mean"})
    chains = rows[(rows["role"] == SAMPLER) & rows["sample"].notna()].sort_values("sample")
    estimates["chains"] = chains.groupby(keys)["value"].agg(lambda v: v.to_numpy(dtype=float))
    health = rows[(rows["role"] == SAMPLER) & rows["sample"].isna()]
    by_label = {label: key for key, label in LLC_HEALTH.items()}
    health = health.pivot_table(index=keys, columns="label", values="value", aggfunc="first").rename(columns=by_label)
    table = estimates.join(health.reindex(columns=list(LLC_HEALTH))).reset_index()
    table["healthy"] = table["healthy"].fillna(1.0)  # an estimate without a health check is taken as it is
    table["chains"] = [c if isinstance(c, np.ndarray) else np.array([]) for c in table["chains"]]
    table["signal"] = [llc_signal(None if layer < 0 else layer, None if head < 0 else head)
                       for layer, head in zip(table["layer"], table["head"])]
    return table[columns].sort_values(["run", "signal", "step"], ignore_index=True)


def llc_signal(layer, head) -> str:
    """The stage signal an LLC estimate is: "llc" (the whole model) or "llc/L1H0"."""
    component = component_name(layer, head)
    return "llc" if component is None else f"llc/{component}"


def llc_curves(results: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(run, signal) -> per step: mean, stderr, healthy (bool), and the chains' values."""
    table = llc_estimates(results)
    curves = {}
    for (run, signal), rows in table.groupby(["run", "signal"], sort=True):
        curve = rows.set_index("step")[["mean", "stderr", "healthy", "chains"]].sort_index()
        curves[(run, signal)] = curve.assign(healthy=curve["healthy"] > 0.5)
    return curves


def llc_boundaries(run: str, signal: str, curve: pd.DataFrame, n_boot: int = 100, seed: int = 0) -> list[Boundary]:
    """Change points of one LLC curve (healthy estimates only), with a bootstrap over chains."""
    ok = curve[curve["healthy"] & np.isfinite(curve["mean"])]
    steps = ok.index.to_numpy()
    noise = float(np.nanmedian(ok["stderr"])) if np.isfinite(ok["stderr"]).any() else 0.0
    found = change_points(steps, ok["mean"].to_numpy(), noise)
    if not found:
        return []
    chains = [np.asarray(c, dtype=float) for c in ok["chains"]]
    resampled: list[list[int]] = []
    if n_boot and all(len(c) > 1 for c in chains):
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            means = [c[rng.integers(0, len(c), len(c))].mean() for c in chains]
            resampled.append(change_points(steps, means, noise))
    out = []
    for k in found:
        near = [min(ks, key=lambda j: abs(j - k)) for ks in resampled if ks and min(abs(j - k) for j in ks) <= 1]
        share = len(near) / len(resampled) if resampled else None
        if share is not None and share < MIN_FOUND_IN:
            continue  # the chains' own scatter moves it or makes it go: not a boundary of the curve
        samples = [10 ** ((math.log10(steps[j - 1] + 1) + math.log10(steps[j] + 1)) / 2) - 1 for j in near]
        out.append(_boundary(run, signal, steps, k, share, samples))
    return out


# ---- essential dynamics ------------------------------------------------------------------------
@dataclass
class Trajectory:
    steps: np.ndarray  # (n,)
    coords: np.ndarray  # (n, k): the checkpoints in the first k principal components
    explained: np.ndarray  # (k,) share of the variance each explains


def trajectory(items: pd.DataFrame | None, k: int = ED_COMPONENTS) -> Trajectory | None:
    """PCA of one run's output vectors (its essential_dynamics item scores: step × position)."""
    if items is None or not len(items):
        return None
    rows = items[(items["probe"] == ED_PROBE) & (items["metric"] == ED_METRIC)]
    if not len(rows):
        return None
    grid = rows.pivot_table(index="step", columns="item", values="value").dropna(axis=1).sort_index()
    if grid.shape[0] < 3 or grid.shape[1] < 2:
        return None
    x = grid.to_numpy(dtype=float)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(k, len(s))
    total = float((s**2).sum()) or 1.0
    return Trajectory(grid.index.to_numpy(), u[:, :k] * s[:k], (s[:k] ** 2) / total)


def trajectory_boundaries(run: str, traj: Trajectory) -> list[Boundary]:
    return [_boundary(run, ED_PROBE, traj.steps, k) for k in change_points(traj.steps, traj.coords)]


# ---- per run, and against the capability onsets ----------------------------------------------
STAGE_COLUMNS = [f for f in Boundary.__dataclass_fields__]


def stage_table(results: pd.DataFrame, item_results=None, n_boot: int = 100) -> tuple[pd.DataFrame, dict]:
    """(stages: one row per boundary, {run: Trajectory}). `item_results(run)` gives that run's
    item scores (for the essential dynamics), one run at a time."""
    bounds, trajectories = [], {}
    for (run, signal), curve in llc_curves(results).items():
        bounds += llc_boundaries(run, signal, curve, n_boot)
    if item_results is not None:
        for run in sorted(results.loc[results["probe"] == ED_PROBE, "run"].unique()):
            traj = trajectory(item_results(run))
            if traj is not None:
                trajectories[run] = traj
                bounds += trajectory_boundaries(run, traj)
    table = pd.DataFrame([asdict(b) for b in bounds], columns=STAGE_COLUMNS)
    return table.sort_values(["run", "boundary_step", "signal"], ignore_index=True), trajectories


def onsets_near_boundaries(stages: pd.DataFrame, emergence: pd.DataFrame, curves=None) -> pd.DataFrame:
    """For each boundary, the onsets within one checkpoint interval of it, nearest first: of
    every task's metric, and of the other `curves` ((probe, metric) pairs, e.g. the
    report's headline curves). A boundary lies somewhere between two probed checkpoints
    (low_step, high_step); an onset is within one checkpoint interval of it when it is within
    `interval_steps` (the checkpoint spacing there) of that span: from low - Δ to high + Δ.
    `distance` is the onset's distance to the span (0 inside it)."""
    rows = []
    keep = set(curves or ())
    if len(emergence):
        listed = np.array([(p, m) in keep for p, m in zip(emergence["probe"], emergence["metric"])], dtype=bool)
        found = emergence[(emergence["role"].isin(TASK_ROLES).to_numpy() | listed) & emergence["has_onset"].to_numpy()]
    else:
        found = emergence
    for b in stages.itertuples(index=False):
        mine = found[found["run"] == b.run] if len(found) else found
        if len(mine):
            gap = np.maximum(np.maximum(b.low_step - mine["onset_step"], mine["onset_step"] - b.high_step), 0.0)
            near = mine.assign(distance=gap)
            near = near[near["distance"] <= b.interval_steps].sort_values(["distance", "onset_step"])
        else:
            near = mine
        names = [f"{p}/{m} ({s:.0f})"
                 for p, m, s in zip(near.get("probe", []), near.get("metric", []), near.get("onset_step", []))]
        rows.append({"run": b.run, "signal": b.signal, "boundary_step": b.boundary_step, "low_step": b.low_step,
                     "high_step": b.high_step, "interval_steps": b.interval_steps, "found_in": b.found_in,
                     "onsets": "; ".join(names)})
    return pd.DataFrame(rows, columns=["run", "signal", "boundary_step", "low_step", "high_step", "interval_steps",
                                       "found_in", "onsets"])
