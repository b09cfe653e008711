"""Coarse-to-fine checkpoint selection for the sweep. Probe a log-spaced subset of a run's
checkpoints first; then, for every headline curve that shows an onset, bisect each interval
in which it crosses the onset level (half its rise) until the crossing lies between
adjacent saved checkpoints. The onset then comes out exactly as a full sweep gives it (the
same two checkpoints, the same start and final values); the transition width and the
sigmoid fit are read from the checkpoints probed, so they can differ a little."""

from __future__ import annotations

import numpy as np
import pandas as pd

from observatory.emergence import detect_onset, headline_metrics, min_rise, oriented


def log_spaced(steps: list[int], n: int) -> set[int]:
    """About `n` of the sorted `steps`, even on log10(step + 1), with the first two and last two
    (where the onset detector reads a curve's start and final values)."""
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


def to_refine(steps: list[int], rows: pd.DataFrame, fraction: float = 0.5) -> set[int]:
    """Steps to probe next for one run, given its rows so far (step, probe, metric, value)."""
    wanted = set()
    for probe, metric in headline_metrics(rows):
        curve = rows[(rows["probe"] == probe) & (rows["metric"] == metric)].sort_values("step")
        x, y = curve["step"].to_numpy(), oriented(probe, metric, curve["value"].to_numpy())
        onset = detect_onset(x, y, fraction, min_rise=min_rise(metric), n_boot=0)
        if not onset.has_onset:
            continue
        normalized = (y - onset.start_value) / (onset.final_value - onset.start_value)
        for i in range(len(x) - 1):
            lo, hi = sorted(normalized[i : i + 2])
            if lo < fraction <= hi:
                middle = between(steps, int(x[i]), int(x[i + 1]))
                if middle is not None:
                    wanted.add(middle)
    return wanted
