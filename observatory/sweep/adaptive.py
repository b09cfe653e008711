"""Coarse-to-fine checkpoint selection for the sweep. Probe a log-spaced subset of a run's
checkpoints first; then, for every headline curve that shows an onset, bisect the intervals
that can still hold its onset, until each lies between adjacent saved checkpoints.

The onset is where a curve crosses its level (half its rise) for the last time, so two kinds
of interval can hold it: the one where the probed curve last rises through the level, and any
later one where a dip below the level could hide between two probed checkpoints, which is
plausible only where the curve sits within a few noise σ of the level. Once none is left, the
onset comes out as a full sweep gives it (the same two checkpoints, the same start and final
values); the transition width and the sigmoid fit are read from the checkpoints probed, so
they can differ a little. A curve whose noise exceeds MAX_NOISE of its rise gets no dip
search: its last crossing is set by noise (on four real runs, the full sweep's item bootstrap
found such onsets in 22-40% of resamples) and only probing nearly every checkpoint pins it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from observatory.analysis.emergence import curve_spec, detect_onset, headline_metrics, step_noise
from observatory.analysis.stages import LLC_PROBE, change_points, llc_curves

DIP_BAND = 2.0  # a dip is searched for between checkpoints whose lower end is within DIP_BAND σ of the level
MAX_NOISE = 0.1  # σ as a share of the rise beyond which no dip is searched for
MIN_NOISE = 0.01  # σ read from a few probed checkpoints can come out 0 (equal values by chance)


def log_spaced(steps: list[int], n: int) -> set[int]:
    """About `n` of the sorted `steps`, even on log10(step + 1), with the first two and last two
    (where the onset detector reads a curve's start and final values)."""
    if not steps:  # a run that has saved nothing yet
        return set()
    x = np.log10(np.asarray(steps, dtype=float) + 1)
    picked = {steps[int(np.argmin(np.abs(x - t)))] for t in np.linspace(x[0], x[-1], n)}
    return picked | set(steps[:2]) | set(steps[-2:])


def between(steps: list[int], a: int, b: int) -> int | None:
    """The saved step strictly between a and b nearest their midpoint on the log axis."""
    inside = [s for s in steps if a < s < b]
    if not inside:
        return None
    middle = (np.log10(a + 1) + np.log10(b + 1)) / 2
    return min(inside, key=lambda s: abs(np.log10(s + 1) - middle))


def onset_intervals(normalized: np.ndarray, level: float) -> list[int]:
    """Indices i of the probed intervals (i, i + 1) that can hold the last crossing of `level`
    by a curve normalized to rise from 0 to 1: the last rise through it, and later intervals
    with an end within DIP_BAND noise σ of it."""
    below = np.flatnonzero(normalized < level)
    last = int(below[-1]) if len(below) else 0
    after = normalized[last + 1:]
    sigma = step_noise(after if len(after) >= 3 else normalized) / np.sqrt(2)  # a step's σ is √2 a value's
    margin = DIP_BAND * max(sigma, MIN_NOISE) if sigma <= MAX_NOISE else 0.0
    return [i for i in range(last, len(normalized) - 1) if min(normalized[i : i + 2]) <= level + margin]


def to_refine(steps: list[int], rows: pd.DataFrame, fraction: float = 0.5) -> set[int]:
    """Steps to probe next for one run, given its rows so far (step, probe, metric, value):
    around each headline curve's onset, and between the two probed checkpoints on either side
    of each change point of its LLC curves (observatory/analysis/stages.py), until they are adjacent."""
    wanted = set()
    if "stderr" in rows and (rows["probe"] == LLC_PROBE).any():
        for (_, _), curve in llc_curves(rows.assign(run="")).items():
            ok = curve[curve["healthy"] & np.isfinite(curve["mean"])]
            if len(ok) < 2:
                continue
            probed = ok.index.to_numpy()
            for k in change_points(probed, ok["mean"].to_numpy(), float(np.nanmedian(ok["stderr"]))):
                middle = between(steps, int(probed[k - 1]), int(probed[k]))
                if middle is not None:
                    wanted.add(middle)
    for probe, metric in headline_metrics(rows):
        curve = rows[(rows["probe"] == probe) & (rows["metric"] == metric)].sort_values("step")
        sign, rise = curve_spec(curve)
        x, y = curve["step"].to_numpy(), sign * curve["value"].to_numpy()
        onset = detect_onset(x, y, fraction, min_rise=rise, stderr=curve["stderr"].to_numpy(), n_boot=0)
        if not onset.has_onset:
            continue
        normalized = (y - onset.start_value) / (onset.final_value - onset.start_value)
        for i in onset_intervals(normalized, fraction):
            middle = between(steps, int(x[i]), int(x[i + 1]))
            if middle is not None:
                wanted.add(middle)
    return wanted


def coarse_to_fine(steps: dict[str, list[int]], n: int, done: dict[str, set[int]],
                   probe: Callable[[dict[str, set[int]]], dict[str, pd.DataFrame]]) -> dict[str, set[int]]:
    """The steps of each run's saved `steps` worth probing: about `n` log-spaced ones and those
    already `done`, then whatever `to_refine` asks for, until it asks for nothing new.
    `probe(selected)` probes what it has not yet of `selected` and returns the rows so far of
    each run that has any."""
    selected = {run: log_spaced(saved, n) | done.get(run, set()) for run, saved in steps.items()}
    while True:
        more = {run: to_refine(steps[run], run_rows) for run, run_rows in probe(selected).items()}
        if all(wanted <= selected[run] for run, wanted in more.items()):
            return selected
        for run, wanted in more.items():
            selected[run] |= wanted
