"""Developmental signals: the LLC probe against a loss whose learning coefficient is known, the
sampler's health flags, calibration, stage boundaries on planted and on flat or noisy curves,
and the probes stored and re-used like every other."""

import copy
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, probe_defaults, unprobed_copy
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from observatory import store
from observatory.analysis import stages
from observatory.calibrate import calibrate
from observatory.calibrate import main as calibrate_main
from observatory.metrics import LLC_HEALTH
from observatory.probes.llc import Estimate, estimate, param_masks, settings, token_loss
from observatory.report import figures, write_report
from observatory.sweep import sweep
from train.model import GPT, GPTConfig

DEFAULT = probe_defaults()["llc"]  # conf/probes/llc/default.yaml


def llc_settings(**changed):
    """The LLC probe's settings: its config file's, with some changed."""
    return settings(DEFAULT | changed)


# ---- the estimate ------------------------------------------------------------------------------
class Quadratic(torch.nn.Module):
    """L(w) = ½ Σ h_i w_i², minimal (0) at w = 0: a regular minimum, learning coefficient d / 2."""

    def __init__(self, d: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(d))
        self.register_buffer("h", torch.linspace(0.5, 2.0, d))


def quadratic_loss(model, input_ids):  # the same at every token of every row: no minibatch noise
    return (0.5 * (model.h * model.w**2).sum()).expand(input_ids.shape[0], input_ids.shape[1] - 1)


def test_llc_at_the_minimum_of_a_quadratic_is_half_the_dimension():
    d = 10
    blocks = torch.zeros(64, 2, dtype=torch.long)  # rows for the sampler to batch; the loss ignores them
    # ε·nβ·h <= 0.08: the discretized chain's variance is within 2% of the posterior's
    e = estimate(Quadratic(d), blocks, torch.ones(64, 1, dtype=torch.bool),
                 llc_settings(lr=4e-4, n_beta=100.0, localization=0.0, chains=4, burnin=200, draws=2000, batch_size=8),
                 loss_fn=quadratic_loss)
    assert e.init_loss == 0.0 and e.healthy
    assert abs(e.mean - d / 2) <= 3 * e.stderr, (e.mean, e.stderr)
    assert 0.05 < e.stderr < 0.5  # the chains' error is an error, not zero


def estimate_from(trace, init_loss=1.0, burnin=2, epoch=2, n_beta=10.0) -> Estimate:
    return Estimate(np.asarray(trace, dtype=float), init_loss, burnin, epoch, n_beta, max_drift=0.2, max_loss_rise=5.0)


def test_health_flags_divergence_negative_chains_and_drift():
    settled = [[1.0, 1.1, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2]] * 2
    assert estimate_from(settled).healthy and estimate_from(settled).mean == pytest.approx(2.0)
    blown = settled[:1] + [[1.0, 1.1, 1.2, np.nan, np.nan, np.nan, np.nan, np.nan]]
    assert list(estimate_from(blown).diverged) == [False, True] and not estimate_from(blown).healthy
    exploded = settled[:1] + [[1.0, 1.1, 1.2, 1.2, 1.2, 1.2, 9.0, 9.0]]  # ends 8 nats above the checkpoint
    assert estimate_from(exploded).diverged.mean() == 0.5
    spike = settled[:1] + [[1.0, 1.1, 1.2, 1.2, 9.0, 1.2, 1.2, 1.2]]  # and comes back
    assert estimate_from(spike).diverged.mean() == 0.0
    below = settled[:1] + [[1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]]
    e = estimate_from(below)
    assert list(e.negative) == [False, True] and not e.healthy
    rising = [[1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7]] * 2  # still climbing after burn-in
    assert estimate_from(rising).drift > 0.2 and not estimate_from(rising).healthy
    # the draws are whole passes over the batches (epoch 2: the last, odd step is left out)
    assert estimate_from([[1.0, 1.0, 1.2, 1.4, 1.2, 1.4, 5.0]]).mean == pytest.approx(3.0)
    metrics = estimate_from(below).metrics("L1H0")
    assert metrics["L1H0/healthy"].value == 0.0 and metrics["L1H0/negative"].value == 0.5
    assert metrics["L1H0/mean"].stderr == pytest.approx(np.std(e.per_chain, ddof=1) / math.sqrt(2))
    assert {(m.layer, m.head) for m in metrics.values()} == {(1, 0)}  # each says what it is of
    assert [m.sample for m in metrics.values() if m.role == "sampler" and m.label == "LLC"] == [0, 1]


def test_unknown_settings_are_an_error_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"probes.llc: unknown setting\(s\) \['step_size'\]"):
        settings(DEFAULT | {"step_size": 1e-4})
    with pytest.raises(ValueError, match=r"probes.llc: missing setting\(s\) \['chains'\]"):
        settings({k: v for k, v in DEFAULT.items() if k != "chains"})
    from observatory.sweep import SweepError
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(SweepError, match=r"probes.llc: unknown setting\(s\) \[.step_size.\]"):
        sweep(tmp_path, {"llc": {"step_size": 1e-4}}, progress=False)


def test_head_masks_select_one_heads_weights():
    model = GPT(GPTConfig(vocab_size=12, n_layer=2, n_ctx=8, d_model=32, n_head=2))
    masks = param_masks(model, "L1H0")
    d, hd = 32, 16
    assert set(masks) == {"blocks.1.attn.qkv.weight", "blocks.1.attn.qkv.bias", "blocks.1.attn.out.weight"}
    assert int(masks["blocks.1.attn.qkv.weight"].sum()) == 3 * hd * d  # its q, k, v rows
    assert int(masks["blocks.1.attn.out.weight"].sum()) == d * hd  # its columns of the output projection
    q, k, v = masks["blocks.1.attn.qkv.bias"].view(3, 2, hd).unbind(0)
    assert all(x[0].all() and not x[1].any() for x in (q, k, v))
    assert all(m is None for m in param_masks(model, "L0").values()) and len(param_masks(model, "L0")) > 3
    with pytest.raises(ValueError):
        param_masks(model, "L2H0")


# ---- calibration ---------------------------------------------------------------------------------
def small_trained_model():
    """A 1-layer GPT trained to a minimum of a noisy bigram task (next token = previous + 1 or + 2)."""
    torch.manual_seed(0)
    V, T, M = 10, 8, 256
    g = torch.Generator().manual_seed(0)
    steps = torch.randint(1, 3, (M, T), generator=g)
    blocks = torch.cumsum(torch.cat([torch.randint(0, V, (M, 1), generator=g), steps], 1), 1) % V  # (M, T + 1)
    model = GPT(GPTConfig(vocab_size=V, n_layer=1, n_ctx=T, d_model=16, n_head=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        logits = model(blocks[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), blocks, torch.ones(M, T, dtype=torch.bool)


def test_calibration_picks_a_stable_setting_and_rejects_a_diverging_one(tmp_path):
    model, blocks, mask = small_trained_model()
    base = llc_settings(chains=2, burnin=32, draws=64, batch_size=32)
    table, estimates = calibrate(model, blocks, mask, base, {"lr": [1e-3, 1.0], "n_beta": [100.0],
                                                             "localization": [100.0]})
    stable, diverging = table.set_index("lr").loc[1e-3], table.set_index("lr").loc[1.0]
    assert stable["passes"] and stable["chosen"] and stable["llc"] > 0
    assert not diverging["passes"] and not diverging["chosen"] and diverging["diverged"] > 0
    assert table["chosen"].sum() == 1 and len(estimates) == 2


# ---- the batched chains against devinterp's -------------------------------------------------------
STABLE = dict(lr=3e-4, n_beta=100.0, localization=300.0, chains=4, burnin=16, draws=48, batch_size=32)
WILD = STABLE | dict(lr=1e-3, localization=100.0)  # chains along which rounding grows (vmap's: 1e-4 to 1e-2 of the loss)


@pytest.fixture(scope="module")
def trained():
    """small_trained_model with the loss on the last half of each block (weighted as training weighs it)."""
    model, blocks, mask = small_trained_model()
    mask[:, : mask.shape[1] // 2] = False
    return model, blocks, mask


@pytest.fixture(scope="module")
def by_devinterp(trained):
    """devinterp's `llc` on the trained model: the whole model's and head L0H0's, and the whole model's at WILD."""
    model, blocks, mask = trained
    runs = [("stable", STABLE, None), ("stable", STABLE, "L0H0"), ("wild", WILD, None)]
    return {(name, c): estimate(model, blocks, mask, llc_settings(**s), c, sampler="devinterp") for name, s, c in runs}


@pytest.mark.parametrize("sampler", ["chainwise", "vmap"])
@pytest.mark.parametrize("component", [None, "L0H0"])
def test_batched_chains_follow_devinterps_chains(trained, by_devinterp, component, sampler):
    """The same seeds, batches and update: the same chains, step by step, to float rounding."""
    model, blocks, mask = trained
    batched = estimate(model, blocks, mask, llc_settings(**STABLE), component, sampler=sampler)
    reference = by_devinterp["stable", component]
    assert batched.trace.shape == reference.trace.shape == (4, 64)
    assert batched.init_loss == pytest.approx(reference.init_loss, rel=1e-6)
    assert np.allclose(batched.trace, reference.trace, rtol=1e-3)  # 2e-5 seen
    assert np.allclose(batched.per_chain, reference.per_chain, rtol=1e-3)
    assert len(set(batched.per_chain.round(3))) == 4  # four chains, not one four times


@pytest.mark.parametrize("sampler", ["chainwise", "vmap"])
def test_batched_estimate_is_devinterps_within_the_chains_error(trained, by_devinterp, sampler):
    """On the same model and data (the same seed: another seed draws another batch order, which
    moves every chain alike and which the chains' error does not count: devinterp's own estimate
    at lr 1e-3, localization 1000 moved from 123.6 ± 0.5 to 137.6 ± 1.0 from seed 0 to 7)."""
    model, blocks, mask = trained
    batched, reference = estimate(model, blocks, mask, llc_settings(**WILD), sampler=sampler), by_devinterp["wild", None]
    assert abs(batched.mean - reference.mean) <= 2 * math.hypot(batched.stderr, reference.stderr), \
        (batched.mean, batched.stderr, reference.mean, reference.stderr)


def test_a_chain_that_blows_up_ends_where_devinterps_does(trained):
    model, blocks, mask = trained
    s = llc_settings(**STABLE | dict(lr=0.3, chains=2, burnin=4, draws=8))
    reference = estimate(model, blocks, mask, s, sampler="devinterp")
    assert not np.isfinite(reference.trace).all()  # the setting does blow up
    for sampler in ("chainwise", "vmap"):  # the whole forward pass, as devinterp's: a chain blowing up amplifies
        batched = estimate(model, blocks, mask, s, loss_fn=token_loss, sampler=sampler)  # any rounding
        assert np.array_equal(np.isfinite(batched.trace), np.isfinite(reference.trace))
        assert batched.failures == [m.removeprefix("Chain failed: ") for m in reference.failures]
        assert batched.diverged.all() and not batched.healthy
    default = estimate(model, blocks, mask, s)  # the logits where the loss is taken alone: it blows up too
    assert default.diverged.all() and not default.healthy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batched_chains_run_on_the_models_device_as_devinterps_do(trained):
    model, blocks, mask = trained
    s = llc_settings(**STABLE)
    on_gpu = copy.deepcopy(model).cuda()
    batched, reference = (estimate(on_gpu, blocks, mask, s, sampler=x) for x in (None, "devinterp"))  # None: vmap
    assert np.allclose(batched.trace, reference.trace, rtol=1e-3, atol=1e-4)  # the same CUDA generator streams
    on_cpu = estimate(model, blocks, mask, s)
    assert abs(batched.mean - on_cpu.mean) <= 2 * math.hypot(batched.stderr, on_cpu.stderr)


# ---- stage boundaries ----------------------------------------------------------------------------
STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] + list(range(750, 10001, 250)))


def test_planted_change_points_are_found_where_they_are():
    x = np.log10(STEPS + 1)
    rng = np.random.default_rng(0)
    jump = np.where(STEPS < 7000, 10.0, 2.0) + rng.normal(0, 0.5, len(STEPS))
    assert [STEPS[k] for k in stages.change_points(STEPS, jump, 0.5)] == [7000]
    rise_fall = np.where(STEPS < 5000, 10 * x, 10 * np.log10(5001) - 60 * (x - np.log10(5001)))
    found = [STEPS[k] for k in stages.change_points(STEPS, rise_fall + rng.normal(0, 0.3, len(STEPS)), 0.3)]
    assert len(found) == 1 and 4000 <= found[0] <= 5500  # the peak, within a few checkpoints


@pytest.mark.parametrize("seed", range(5))
def test_flat_or_noisy_curves_give_no_boundary(seed):
    rng = np.random.default_rng(seed)
    assert stages.change_points(STEPS, 5 + rng.normal(0, 1, len(STEPS)), 1.0) == []  # noise, its σ known
    assert stages.change_points(STEPS, 5 + rng.normal(0, 1, len(STEPS))) == []  # σ from the scatter
    assert stages.change_points(STEPS, np.full(len(STEPS), 3.0)) == []  # exactly flat
    assert stages.change_points(STEPS, 2 * np.log10(STEPS + 1) + rng.normal(0, 0.1, len(STEPS))) == []  # one line
    assert stages.change_points(STEPS[:6], [0, 0, 0, 9, 9, 9]) == []  # too few checkpoints


def llc_rows(run, values, healthy, chains=4, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for step, value, ok in zip(STEPS, values, healthy):
        per_chain = value + rng.normal(0, spread, chains)
        none = dict(layer=None, head=None, sample=None)
        metrics = {"mean": (per_chain.mean(), spread / math.sqrt(chains), none | dict(role="stage signal", label="LLC")),
                   "healthy": (float(ok), None, none | dict(role="sampler", label=LLC_HEALTH["healthy"]))}
        metrics |= {f"chain/{i}": (v, None, none | dict(role="sampler", label="LLC", sample=i))
                    for i, v in enumerate(per_chain)}
        rows += [{"run": run, "step": int(step), "probe": "llc", "metric": m, "value": v, "stderr": se} | identity
                 for m, (v, se, identity) in metrics.items()]
    return rows


def test_llc_boundaries_leave_out_unhealthy_estimates_and_carry_an_interval():
    values = np.where(STEPS < 3000, 100.0, 40.0)
    healthy = np.ones(len(STEPS), dtype=bool)
    wild = list(STEPS).index(6000)
    values[wild], healthy[wild] = 500.0, False  # a diverged estimate: no boundary of its own
    table, _ = stages.stage_table(pd.DataFrame(llc_rows("r", values, healthy)), n_boot=20)
    assert list(table["signal"]) == ["llc"] and len(table) == 1
    b = table.iloc[0]
    assert (b["low_step"], b["high_step"]) == (2750, 3000) and 2750 < b["boundary_step"] < 3000
    assert b["interval_steps"] == 250 and b["found_in"] == 1.0


def ed_items(run, coords):
    """Item scores of the essential_dynamics probe whose trajectory is `coords` (steps × 2) in
    two fixed directions of a 50-position output space."""
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(coords.shape[1], 50))
    values = coords @ directions + rng.normal(0, 0.01, (len(coords), 50))
    return pd.DataFrame([{"step": int(s), "probe": "essential_dynamics", "metric": "logprob", "item": i,
                          "value": values[j, i], "weight": 1.0} for j, s in enumerate(STEPS) for i in range(50)])


def test_a_turning_trajectory_has_a_boundary_at_its_turn_and_a_straight_one_none():
    x = np.log10(STEPS + 1)
    turn = np.log10(2001)
    bent = np.stack([np.minimum(x, turn), np.maximum(x - turn, 0)], 1)  # along one direction, then another
    straight = np.stack([x, 0.5 * x], 1)
    results = pd.DataFrame({"run": ["bent", "straight"], "probe": "essential_dynamics", "metric": "logprob",
                            "step": 0, "value": 0.0, "stderr": np.nan})
    items = {"bent": ed_items("bent", bent), "straight": ed_items("straight", straight)}
    table, trajectories = stages.stage_table(results, items.get)
    assert set(trajectories) == {"bent", "straight"} and trajectories["bent"].coords.shape == (len(STEPS), 3)
    assert list(table["run"]) == ["bent"] and table.iloc[0]["signal"] == "essential_dynamics"
    assert 1750 <= table.iloc[0]["low_step"] and table.iloc[0]["high_step"] <= 2250


def test_each_boundary_lists_the_onsets_within_one_checkpoint_interval():
    """The boundary lies between checkpoints 7250 and 7500 (spacing 250): onsets from 7000 to 7750."""
    table = pd.DataFrame([{"run": "r", "signal": "llc", "boundary_step": 7374.0, "low_step": 7250.0,
                           "high_step": 7500.0, "interval_steps": 250.0, "found_in": 1.0}])
    emergence = pd.DataFrame({"run": "r", "probe": ["capability"] * 4 + ["attention", "weights"], "has_onset": True,
                              "role": ["all-or-nothing"] * 4 + ["mechanism", "weights"],
                              "metric": ["a/exact_match", "b/exact_match", "c/exact_match", "d/exact_match",
                                         "induction/max", "norm/total"],
                              "onset_step": [7075.0, 7300.0, 7800.0, 6990.0, 7700.0, 7400.0]})
    near = stages.onsets_near_boundaries(table, emergence, [("attention", "induction/max")])
    assert near.iloc[0]["onsets"] == "capability/b/exact_match (7300); capability/a/exact_match (7075); " \
                                     "attention/induction/max (7700)"


# ---- on real (tiny) runs -------------------------------------------------------------------------
LLC = DEFAULT | {"lr": 1e-4, "n_beta": 100.0, "localization": 100.0, "chains": 2, "burnin": 8, "draws": 16,
                 "batch_size": 8, "components": ["L0H0"]}
SIGNALS = {"llc": LLC, "essential_dynamics": {"max_positions": 256, "seed": 0}, "weights": {}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, train_debug):
    root = tmp_path_factory.mktemp("devinterp")
    train_debug(root, "experiment_name=tiny", "data.tasks.modular_addition.p=23", "trainer.max_steps=20", "data.probe_items=32")
    return root / "tiny"


@pytest.fixture
def experiment(tiny_run, tmp_path):
    return unprobed_copy(tiny_run, tmp_path)


def test_llc_and_essential_dynamics_are_stored_and_reused_like_every_probe(experiment):
    first = sweep(experiment, SIGNALS, progress=False)
    assert first.probed == first.checkpoints == 8 and not first.problems
    llc = first.table[first.table["probe"] == "llc"]
    assert {"mean", "chain/0", "chain/1", "drift", "diverged", "negative", "healthy", "init_loss",
            "L0H0/mean", "L0H0/healthy"} <= set(llc["metric"])
    assert llc["step"].nunique() == 8 and np.isfinite(llc.loc[llc["metric"] == "mean", "stderr"]).all()
    items = store.read_item_results(experiment, "13k-s0")
    ed = items[items["probe"] == "essential_dynamics"]
    assert ed.groupby("step")["item"].nunique().eq(256).all()  # the same 256 positions at every checkpoint
    again = sweep(experiment, SIGNALS, progress=False)
    assert (again.probed, again.skipped) == (0, 8)
    pd.testing.assert_frame_equal(again.table, first.table)
    # a changed setting redoes that probe alone
    changed = sweep(experiment, SIGNALS | {"llc": LLC | {"seed": 1}}, progress=False)
    assert changed.probed == 8
    unchanged = changed.table[changed.table["probe"] != "llc"].reset_index(drop=True)
    pd.testing.assert_frame_equal(unchanged, first.table[first.table["probe"] != "llc"].reset_index(drop=True))


@pytest.mark.slow  # about 25 s: each worker process imports devinterp (and through it transformers)
def test_workers_give_the_same_llc(experiment, tmp_path):
    serial = sweep(experiment, SIGNALS, progress=False).table
    copy = unprobed_copy(experiment, tmp_path / "copy")
    parallel = sweep(copy, SIGNALS, workers=2, progress=False).table
    numbers = ["value", "stderr"]  # other thread counts in the workers: the same to float rounding
    pd.testing.assert_frame_equal(parallel.drop(columns=numbers), serial.drop(columns=numbers))
    for column in numbers:
        assert np.allclose(parallel[column], serial[column], rtol=1e-4, atol=1e-6, equal_nan=True), column


def test_the_adaptive_sweep_runs_the_llc_on_the_checkpoints_it_picks(experiment):
    adaptive = sweep(experiment, SIGNALS | {"capability": {}}, adaptive=4, progress=False)
    picked = adaptive.checkpoints - adaptive.left_out
    assert not adaptive.problems and adaptive.left_out > 0
    assert adaptive.table.query("probe == 'llc'")["step"].nunique() == picked


def test_report_writes_stages_llc_and_trajectory_charts(experiment):
    sweep(experiment, SIGNALS | {"capability": {}}, progress=False)
    write_report(experiment, n_boot=10)
    out = experiment / "observatory"
    table = pd.read_csv(out / "tables" / "stages.csv")
    assert list(table.columns) == stages.STAGE_COLUMNS
    assert (out / "tables" / "stage_onsets.csv").exists() and (out / "tables" / "llc_unhealthy.csv").exists()
    assert (out / "charts" / "llc-13k-s0.png").exists() and (out / "charts" / "essential-dynamics-13k-s0.png").exists()
    page = (out / "index.html").read_text()
    assert '<section id="stages"><h2>Developmental stages</h2>' in page and "13k-s0: local learning coefficient" in page
    results = pd.read_parquet(out / "results.parquet")
    llc = figures.llc_figure("13k-s0", stages.llc_curves(results), table, 20)
    assert figures.figure_runs(llc) == {"13k-s0"}
    drawn = {t.name: len(t.y) for t in llc.data if t.meta}  # each curve with a point per healthy estimate
    healthy = results[(results["probe"] == "llc") & results["metric"].isin(["healthy", "L0H0/healthy"])]
    assert drawn == {"LLC": int(healthy.query("metric == 'healthy'")["value"].sum()),
                     "L0H0": int(healthy.query("metric == 'L0H0/healthy'")["value"].sum())}
    emergence = pd.read_csv(out / "tables" / "emergence.csv")
    assert not emergence["probe"].isin(["llc", "essential_dynamics"]).any()  # stages' signals, not onsets


def test_calibrate_command_writes_the_chosen_settings_as_a_probe_config(tiny_run, tmp_path):
    target = tmp_path / "llc.yaml"
    GlobalHydra.instance().clear()
    code = calibrate_main([f"checkpoints_dir={tiny_run.parent}", "experiment_name=tiny", "step=20",
                           "sampler.chains=2", "sampler.burnin=32", "sampler.draws=32", "sampler.batch_size=8",
                           "grid.lr=[1e-2,3.0]", "grid.n_beta=[10]", "grid.localization=[100]", f"write={target}"])
    assert code == 0
    written = settings(OmegaConf.to_container(OmegaConf.load(target)))
    assert written.lr == 1e-2 and written.n_beta == 10
    assert written.chains == DEFAULT["chains"]  # the grid's sampler overrides are not the probe's
    out = tiny_run / "observatory" / "calibration"
    assert (out / "13k-s0-step20.png").exists()
    assert pd.read_csv(out / "13k-s0-step20.csv")["chosen"].sum() == 1


def test_devinterp_is_loaded_only_when_an_estimate_runs():
    code = ("import sys, observatory.sweep, observatory.report, observatory.analysis.stages, observatory.calibrate; "
            "print(sorted(m for m in ('devinterp', 'datasets', 'transformers', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wandb_logs_an_unhealthy_estimate_apart_from_the_curve():
    from dataclasses import asdict

    from observatory.report.wandb_log import metric_keys

    settled = [[1.0, 1.1, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2]] * 2
    below = settled[:1] + [[1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]]  # a negative chain: unhealthy
    metrics = estimate_from(below).metrics() | estimate_from(settled).metrics("L1H0")
    rows = pd.DataFrame([{"run": "r", "step": 5, "probe": "llc", "metric": name} | asdict(m) for name, m in metrics.items()])
    keys = dict(zip(rows["metric"], metric_keys(rows)))
    assert (keys["mean"], keys["chain/1"], keys["healthy"]) == ("llc/unhealthy/mean", "llc/unhealthy/chain/1", "llc/healthy")
    assert (keys["L1H0/mean"], keys["L1H0/chain/0"]) == ("llc/L1H0/mean", "llc/L1H0/chain/0")  # its component is healthy
