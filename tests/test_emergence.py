"""The onset detector on synthetic curves with known answers."""

import numpy as np
import pandas as pd
import pytest

from observatory.analysis.emergence import detect_onset, emergence_table, step_noise
from train.checkpointing import checkpoint_steps

STEPS = np.array(checkpoint_steps(4000, None, 250))  # 0, powers of two, every 250, as training writes


def logistic(steps, center_step: float, width_decades: float) -> np.ndarray:
    """0 to 1 on the log-step axis, centred at center_step, from 10% to 90% in width_decades."""
    w = width_decades / (2 * np.log(9))
    return 1 / (1 + np.exp(-(np.log10(steps + 1) - np.log10(center_step + 1)) / w))


def sigmoid_curve(center_step: float, width_decades: float, noise: float = 0.0, seed: int = 0):
    y = 0.05 + 0.9 * logistic(STEPS, center_step, width_decades)
    return y + noise * np.random.default_rng(seed).normal(size=len(y))


@pytest.mark.parametrize("center", [30, 300, 1500])
def test_known_onsets_are_recovered(center):
    onset = detect_onset(STEPS, sigmoid_curve(center, 0.4, noise=0.01), n_boot=50)
    assert onset.has_onset
    assert center / 1.25 < onset.onset_step < center * 1.25  # where it crosses half the rise
    assert center / 1.3 < onset.center_step < center * 1.3
    assert onset.ci_low_step <= onset.center_step <= onset.ci_high_step
    assert onset.abruptness == pytest.approx(1 / 0.4, rel=0.3)
    # the rise begins (10%) and ends (90%) 0.2 decades either side of the midpoint
    assert center * 10**-0.2 / 1.3 < onset.rise_start_step < center * 10**-0.2 * 1.3
    assert center * 10**0.2 / 1.3 < onset.rise_end_step < center * 10**0.2 * 1.3


def test_the_steepest_point_finds_the_sharp_stage_of_a_curve_that_moves_in_two():
    """A loss that falls 60% of its way early and slowly (around step 30, over 1.5 decades), then
    40% sharply at a phase change (step 1500, 0.1 decades): its half-way point lies in the first
    stage, its steepest point at the second's centre (a logistic of height h and scale w is
    steepest at its centre, h / 4w: 8.8 nats per decade there against the first stage's 0.88)."""
    steps = np.arange(0, 4001, 25)
    loss = 4.0 - 1.2 * logistic(steps, 30, 1.5) - 0.8 * logistic(steps, 1500, 0.1)
    onset = detect_onset(steps, -loss, n_boot=0)
    assert onset.onset_step < 500  # 296: in the first stage
    assert 1500 - 25 <= onset.steepest_step <= 1500 + 25  # within the checkpoint interval holding it


def test_sharp_transitions_are_more_abrupt_than_smooth_ones():
    sharp = detect_onset(STEPS, sigmoid_curve(300, 0.2), n_boot=10)
    smooth = detect_onset(STEPS, sigmoid_curve(300, 2.0), n_boot=10)
    assert sharp.abruptness > 4 * smooth.abruptness


def rising_by(curve: np.ndarray, rise: float) -> np.ndarray:
    """`curve` with its last two values `rise` above the median of its first two: the rise
    (final minus start) the detector measures."""
    out = curve.copy()
    out[-2:] = np.median(curve[:2]) + rise
    return out


FLAT = np.full(len(STEPS), 0.3) + 0.01 * np.random.default_rng(0).normal(size=len(STEPS))  # scatter σ ≈ 0.01
NOISY = 0.5 + 0.2 * np.random.default_rng(1).normal(size=len(STEPS))  # σ ≈ 0.2


@pytest.mark.parametrize("curve,reason", [
    (rising_by(FLAT, 0.01), "rise 0.01 is within noise"),  # up by its scatter: not 4 times it
    (rising_by(NOISY, 0.2), "rise 0.2 is within noise"),
    (FLAT, "does not rise"),  # as drawn, both end a little lower than they start
    (NOISY, "does not rise"),
    (sigmoid_curve(300, 0.4)[::-1].copy(), "does not rise"),
    (1 - sigmoid_curve(300, 0.4), "does not rise"),
], ids=["flat", "noisy", "flat-falling", "noisy-falling", "reversed", "decreasing"])
def test_flat_noisy_and_decreasing_curves_have_no_onset(curve, reason):
    onset = detect_onset(STEPS, curve, n_boot=10)
    assert not onset.has_onset and onset.reason.startswith(reason), onset.reason


def test_a_rise_of_a_few_items_is_no_onset_for_accuracies():
    tiny = np.where(STEPS > 100, 0.008, 0.0)  # 2 of 256 items right from step 128 on
    assert detect_onset(STEPS, tiny, n_boot=0).has_onset  # by shape alone it is a step
    onset = detect_onset(STEPS, tiny, min_rise=0.05, n_boot=0)
    assert not onset.has_onset and "below 0.05" in onset.reason


def test_a_rise_by_one_item_in_128_is_within_its_sampling_error():
    from observatory.metrics import ACCURACY, mean_with_error

    one = np.where(STEPS > 100, 1, 0)  # item 0 right from step 128 on, the other 127 never
    identity = dict(role="all-or-nothing", label="exact match")
    metrics = [mean_with_error(np.r_[k, np.zeros(127)], **ACCURACY, **identity) for k in one]
    values, stderr = np.array([m.value for m in metrics]), np.array([m.stderr for m in metrics])
    assert values[-1] == 1 / 128 and step_noise(values) == 0.0  # flat steps: the curve alone shows no noise
    onset = detect_onset(STEPS, values, stderr=stderr, n_boot=0)  # no minimum rise: the sampling error decides
    assert not onset.has_onset and "within noise" in onset.reason
    table = emergence_table(pd.DataFrame(curve_rows(values, stderr=stderr, **ACCURACY)), n_boot=0)
    assert not table["has_onset"].iloc[0]
    real = [mean_with_error(np.r_[np.ones(k), np.zeros(128 - k)], **ACCURACY, **identity)
            for k in np.where(STEPS > 100, 40, 0)]
    assert detect_onset(STEPS, [m.value for m in real], stderr=[m.stderr for m in real], n_boot=0).has_onset


def test_identical_curves_under_two_names_get_identical_onsets():
    curve = sigmoid_curve(300, 0.4, noise=0.01)
    spec = dict(kind="score", low=0.0, high=1.0)
    rows = curve_rows(curve, "attention", "prev_token/L0H0", **spec) + curve_rows(curve, "attention", "prev_token/max", **spec)
    rows += curve_rows(0.02 * curve, "linear", "t/best", kind="accuracy", low=0.0, high=1.0)  # a rise of 0.018
    rows += curve_rows(0.02 * curve, "other", "t/any_name", kind="accuracy", low=0.0, high=1.0)
    table = emergence_table(pd.DataFrame(rows), n_boot=10).set_index("metric")
    columns = ["has_onset", "reason", "onset_step", "center_step", "width_decades"]
    assert table.loc["prev_token/L0H0", "has_onset"]
    assert table.loc["prev_token/L0H0", columns].equals(table.loc["prev_token/max", columns])
    assert not table.loc["t/best", "has_onset"] and table.loc["t/best", columns].equals(table.loc["t/any_name", columns])


def test_no_false_onsets_on_many_noise_curves():
    false = sum(detect_onset(STEPS, 0.5 + 0.1 * np.random.default_rng(s).normal(size=len(STEPS)), n_boot=0).has_onset
                for s in range(100))
    assert false <= 2


def curve_rows(values, probe="p", metric="m", stderr=None, steps=STEPS, run="m-s0", **spec) -> list[dict]:
    """Results rows of one curve, its spec as a probe declares it (observatory/metrics.py)."""
    spec = dict(kind="score", higher_is_better=True, low=np.nan, high=np.nan, chance=np.nan) | spec
    stderr = np.full(len(values), np.nan) if stderr is None else stderr
    return [{"experiment": "e", "run": run, "model": "m", "seed": 0, "n_params": 10, "n_params_non_embedding": 5,
             "step": s, "tokens": 100 * s, "probe": probe, "metric": metric, "value": v, "stderr": e, **spec}
            for s, v, e in zip(steps, values, stderr)]


def test_table_orients_lower_is_better_metrics():
    loss = 3 - 2 * sigmoid_curve(300, 0.4)  # a loss that drops at step 300
    rows = curve_rows(loss, "loss", "all", kind="loss", higher_is_better=False, low=0.0)
    table = emergence_table(pd.DataFrame(rows), n_boot=10)
    row = table.iloc[0]
    assert row["has_onset"] and 240 < row["onset_step"] < 375
    assert row["onset_tokens"] == pytest.approx(100 * row["onset_step"])
    assert row["onset_flops_6nd"] == pytest.approx(6 * 5 * row["onset_tokens"])
    assert row["final_value"] == pytest.approx(loss[-1])


DENSE = np.unique(np.round(np.logspace(0, 3.6, 80))).astype(int)  # 1 .. ~4000, log-spaced


def item_experiment(item_onsets: np.ndarray):
    """Items that each switch from wrong (0) to right (1) at their own step: the exact-match
    curve is the share of items past their switch, so its half-rise onset is their median."""
    items = pd.DataFrame([{"run": "m-s0", "step": s, "probe": "capability", "metric": "copy/exact_match", "item": i,
                           "value": float(s >= t), "weight": 1.0} for s in DENSE for i, t in enumerate(item_onsets)])
    results = items.groupby(["run", "step", "probe", "metric"], as_index=False)["value"].mean()
    results = results.assign(experiment="e", model="m", seed=0, n_params=10, n_params_non_embedding=5,
                             tokens=results["step"] * 100, kind="accuracy", higher_is_better=True, low=0.0, high=1.0,
                             chance=np.nan, stderr=np.nan)
    return emergence_table(results, lambda run: items[items["run"] == run], n_boot=200).iloc[0]


def test_item_bootstrap_interval_is_that_of_the_median_switch_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    grid = 10 ** (3.6 / 80) * 1.05  # one checkpoint interval of DENSE, plus interpolation slack
    width = {}
    for n in (40, 400):
        switches = np.sort(10 ** rng.uniform(2, 3, n))  # log-uniform in 100..1000
        row = item_experiment(switches)
        assert row["has_onset"] and row["ci_method"] == "items" and row["onset_found_in"] == 1.0
        assert np.median(switches) / grid < row["onset_step"] < np.median(switches) * grid
        # a median's 95% interval spans ranks n/2 ± 0.98·√n of the sample (order statistics)
        low, high = switches[int(n / 2 - 0.98 * n**0.5)], switches[int(n / 2 + 0.98 * n**0.5)]
        assert low / grid**2 < row["onset_ci_low_step"] < low * grid
        assert high / grid < row["onset_ci_high_step"] < high * grid**2
        width[n] = np.log10(row["onset_ci_high_step"] / row["onset_ci_low_step"])
    assert width[400] < width[40] / 2  # ~1/√10 in theory


def test_identical_items_give_an_interval_of_zero_width():
    row = item_experiment(np.full(30, 300.0))
    assert row["onset_ci_low_step"] == row["onset_ci_high_step"] == pytest.approx(row["onset_step"])
