"""Which checkpoints the adaptive sweep probes, on curves whose onset is known by construction."""

import numpy as np
import pandas as pd
import pytest

from observatory.analysis.emergence import detect_onset
from observatory.sweep.adaptive import coarse_to_fine, log_spaced, onset_intervals

STEPS = list(range(0, 1001, 5))  # 201 dense checkpoints
LEVEL = 0.5


def test_only_the_last_rise_through_the_level_and_the_intervals_a_dip_could_hide_in_are_refined():
    # normalized curve: crosses 0.5 between indices 3 and 4, then 0.52 (within 2σ of the level), then well above
    z = np.array([0.0, 0.01, -0.01, 0.2, 0.52, 0.95, 1.0, 1.02, 0.98, 1.0])
    assert onset_intervals(z, LEVEL) == [3, 4]
    # an earlier excursion above the level does not matter: only the last rise through it
    assert onset_intervals(np.array([0.0, 0.7, 0.1, 0.0, 0.9, 1.0, 1.0, 1.01, 0.99]), LEVEL) == [3]
    # a curve that noisy (σ > 10% of its rise) gets no dip search, only its last crossing
    noisy = np.array([0.0, 0.1, 0.0, 0.3, 0.9, 0.55, 1.2, 0.6, 1.1, 0.7, 1.0])
    assert onset_intervals(noisy, LEVEL) == [3]


def _curve(dip_at: int | None) -> pd.Series:
    """Exact match in two steps on the log axis: 0 -> 0.42 at step 150, just above the onset level
    (0.4, half the final 0.8) and alternately ±0.01 around it to step 400, then -> 0.8 at step
    450; `dip_at`: one checkpoint at 0.39."""
    steps = np.asarray(STEPS)
    x = np.log10(steps + 1)
    value = 0.42 / (1 + np.exp(-(x - np.log10(151)) / 0.02)) + 0.38 / (1 + np.exp(-(x - np.log10(451)) / 0.02))
    resting = (steps >= 200) & (steps <= 400)
    value[resting] += np.where(steps[resting] % 10, 0.01, -0.01)
    if dip_at is not None:
        value[STEPS.index(dip_at)] = 0.39
    return pd.Series(value, index=STEPS)


def _probe(curve: pd.Series):
    """A sweep's probe callback for run "toy", whose exact-match curve is `curve`."""

    def probe(selected: dict[str, set[int]]) -> dict[str, pd.DataFrame]:
        steps = sorted(selected["toy"])
        return {"toy": pd.DataFrame({"step": steps, "probe": "capability", "metric": "toy/exact_match",
                                     "value": curve.loc[steps].to_numpy(), "kind": "accuracy",
                                     "higher_is_better": True, "low": 0.0, "high": 1.0, "stderr": np.nan,
                                     "role": "all-or-nothing", "primary": True})}

    return probe


def _adaptive_onset(curve: pd.Series, n: int = 8) -> tuple[float, int]:
    """The onset an adaptive sweep finds on `curve`, and how many checkpoints it probed."""
    probe = _probe(curve)
    chosen = coarse_to_fine({"toy": STEPS}, n, {}, probe)
    rows = probe(chosen)["toy"]
    return detect_onset(rows["step"], rows["value"], n_boot=0).onset_step, len(rows)


@pytest.mark.parametrize("dip_at", [None, 235, 330, 395])
def test_a_dip_below_the_level_between_probed_checkpoints_is_found(dip_at):
    curve = _curve(dip_at)
    full = detect_onset(STEPS, curve.to_numpy(), n_boot=0)
    assert full.has_onset
    if dip_at is None:  # the first rise crosses 0.4 at step 172.3, between the checkpoints at 170 and 175
        assert 170 < full.onset_step < 175
    else:  # the dip sets the onset: the curve last rises through the level after it
        assert dip_at < full.onset_step < dip_at + 5
    onset, probed = _adaptive_onset(curve)
    assert onset == pytest.approx(full.onset_step, rel=1e-12)
    assert probed < len(STEPS)


def test_a_run_that_has_saved_nothing_yet_is_left_alone():
    assert log_spaced([], 8) == set()
    curve = _curve(None)
    probe_toy = _probe(curve)

    def probe(selected: dict[str, set[int]]) -> dict[str, pd.DataFrame]:
        assert selected["empty"] == set()
        return probe_toy(selected)

    chosen = coarse_to_fine({"empty": [], "toy": STEPS}, 8, {}, probe)
    assert chosen["empty"] == set() and len(chosen["toy"]) == _adaptive_onset(curve)[1]


def test_the_checkpoints_on_either_side_of_an_llc_change_point_end_up_adjacent():
    """An LLC curve that jumps between steps 600 and 605: the adaptive sweep bisects towards
    the jump until the two probed checkpoints around it are neighbours."""
    steps = np.asarray(STEPS)
    llc = pd.Series(np.where(steps <= 600, 100.0, 300.0) + np.where(steps % 10, 1.0, -1.0), index=STEPS)

    def probe(selected):
        s = sorted(selected["toy"])
        rows = [{"step": step, "probe": "llc", "metric": m, "value": v, "stderr": se, "role": role, "label": label,
                 "layer": None, "head": None, "sample": None, "primary": False}
                for step in s for m, v, se, role, label in (("mean", llc[step], 1.0, "stage signal", "LLC"),
                                                           ("healthy", 1.0, np.nan, "sampler", "healthy"))]
        return {"toy": pd.DataFrame(rows)}

    chosen = sorted(coarse_to_fine({"toy": STEPS}, 8, {}, probe)["toy"])
    assert 600 in chosen and 605 in chosen and len(chosen) < 40
