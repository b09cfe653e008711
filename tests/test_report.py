"""The report from a small results table with known curves, checked in a real browser."""

import base64
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from observatory import store
from observatory.report import write_report
from train.checkpointing import checkpoint_steps

STEPS = checkpoint_steps(2000, None, 250)
SIZES = {"small": 1_000, "large": 100_000}


def sigmoid(center, width_decades):
    x = np.log10(np.array(STEPS) + 1)
    return 1 / (1 + np.exp(-(x - np.log10(center + 1)) / (width_decades / (2 * np.log(9)))))


def results_table() -> pd.DataFrame:
    """exact match jumps sharply (later for the small model); token accuracy rises smoothly;
    the loss is flat. Two seeds per size, with a little seed-to-seed noise."""
    rows = []
    for model, n in SIZES.items():
        center = 200 if model == "large" else 800
        for seed in (0, 1):
            rng = np.random.default_rng(seed)
            curves = {"copy/exact_match": 0.95 * sigmoid(center, 0.25), "copy/token_accuracy": 0.2 + 0.7 * sigmoid(center, 3.0),
                      "copy/answer_logprob": -3 + 2.5 * sigmoid(center, 3.0),
                      "copy/train_exact_match": sigmoid(center / 10, 0.25)}  # memorized a decade earlier
            for metric, values in curves.items():
                for step, value in zip(STEPS, values + 0.005 * rng.normal(size=len(STEPS))):
                    rows.append({"experiment": "toy", "run": f"{model}-s{seed}", "model": model, "seed": seed,
                                 "n_params": n, "n_params_non_embedding": n, "step": step, "tokens": 64 * step,
                                 "flops_6nd": 6.0 * n * 64 * step, "probe": "capability", "metric": metric, "value": value,
                                 "checkpoint_sha256": "x", "probe_hash": "h"} | SPECS[metric.split("/")[1]])
            norm, loss = dict(kind="norm", low=0.0, high=np.nan), dict(kind="loss", higher_is_better=False, low=0.0, high=np.nan)
            for step in STEPS:
                rows.append(rows[-1] | {"probe": "weights", "metric": "norm/total", "value": 30 - step / 100, "step": step} | norm)
            for step in STEPS:
                rows.append(rows[-1] | {"probe": "loss", "metric": "all", "value": 2.0, "step": step, "tokens": 64 * step} | loss)
    return store.typed(pd.DataFrame(rows, columns=store.COLUMNS))


ACCURACY = dict(kind="accuracy", higher_is_better=True, low=0.0, high=1.0, chance=np.nan, stderr=0.005)
SPECS = {"exact_match": ACCURACY, "token_accuracy": ACCURACY, "train_exact_match": ACCURACY,
         "answer_logprob": dict(kind="logprob", higher_is_better=True, low=np.nan, high=0.0, chance=np.nan, stderr=0.005)}


@pytest.fixture
def report(tmp_path):
    experiment = tmp_path / "toy"
    store.write_parquet(store.output_dir(experiment) / "results.parquet", results_table())
    return write_report(experiment, n_boot=20)


def test_report_tables_find_the_planted_onsets(report):
    out = report.parent
    emergence = pd.read_csv(out / "emergence.csv")
    exact = emergence[emergence["metric"] == "copy/exact_match"].set_index("run")
    assert exact["has_onset"].all()
    assert all(150 < exact.loc[f"large-s{s}", "onset_step"] < 270 for s in (0, 1))
    assert all(600 < exact.loc[f"small-s{s}", "onset_step"] < 1100 for s in (0, 1))
    assert not emergence[emergence["metric"] == "all"]["has_onset"].any()  # flat loss: no onset
    assert set(pd.read_json(out / "emergence.json")["metric"]) == set(emergence["metric"])
    mirage = pd.read_csv(out / "mirage.csv")
    assert mirage["mirage"].all()  # exact match sharp, continuous metrics smooth
    seeds = pd.read_csv(out / "onsets_over_seeds.csv").set_index(["model", "metric"])
    large = seeds.loc[("large", "copy/exact_match")]
    assert large["n_seeds"] == 2 and large["ci_low_step"] <= large["onset_step"] <= large["ci_high_step"]
    assert 150 < large["ci_low_step"] and large["ci_high_step"] < 270  # two close seeds: a narrow interval
    assert not seeds.loc[("small", "all"), "has_onset"]
    scale = pd.read_csv(out / "scale.csv")
    row = scale[(scale["metric"] == "copy/exact_match")].set_index("model")
    assert row.loc["large", "onset_tokens"] < row.loc["small", "onset_tokens"]
    assert set(row["smallest_size_reaching_threshold"]) == {"small"}


def test_report_has_every_chart(report):
    charts = {p.name for p in (report.parent / "charts").glob("*.png")}
    assert {"curve-capability-copy-exact_match.png", "heatmap-capability-copy-exact_match.png",
            "onset-vs-compute.png", "mirage-copy.png", "curve-loss-all.png", "generalization-copy.png"} <= charts
    page = report.read_text()
    assert page.count("<img") == len(charts)
    for png in (report.parent / "charts").glob("*.png"):  # each chart a PNG, embedded in the page as written
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png.name
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in page, png.name


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not (CHROMIUM and shutil.which("chromedriver")), reason="needs Debian's chromium and chromium-driver")
def test_report_loads_in_a_real_browser(report):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    try:
        driver.get(report.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        assert len(images) >= 5 and all(ok for _, ok in images), images
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert "Emergence report: toy" in driver.title + driver.find_element("tag name", "h1").text
    finally:
        driver.quit()


def test_pipeline_on_a_test_sized_experiment(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "observatory.pipeline", f"checkpoints_dir={tmp_path}", "debug=default",
         "model=13k", "data=suite", "data.probe_items=16", "wandb.mode=disabled"],  # model: not quickstart's sweep
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "quickstart" / "observatory"
    assert "1 runs, 11 checkpoints: 11 probed" in result.stdout  # steps 0 1 2 4 8 10 16 20 30 32 40
    assert f"open {out / 'index.html'}" in result.stdout
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["run"]) == {"13k-s0"} and sorted(results["step"].unique()) == [0, 1, 2, 4, 8, 10, 16, 20, 30, 32, 40]
    # the report's table is of these results: a row per curve, from its first to its last checkpoint's value
    emergence = pd.read_csv(out / "emergence.csv").set_index(["probe", "metric"])
    first, last = (results[results["step"] == s].set_index(["probe", "metric"])["value"] for s in (0, 40))
    assert sorted(emergence.index) == sorted(last.index) and set(emergence["run"]) == {"13k-s0"}
    assert emergence["start_value"].to_numpy() == pytest.approx(first.loc[emergence.index].to_numpy(), nan_ok=True)
    assert emergence["final_value"].to_numpy() == pytest.approx(last.loc[emergence.index].to_numpy(), nan_ok=True)
    page = (out / "index.html").read_text()
    charts = list((out / "charts").glob("*.png"))
    assert "Emergence report: quickstart" in page and page.count("<img") == len(charts) > 0


def test_wandb_gets_curves_onsets_tables_and_images(report):
    from wandb_offline import history, records, run_files

    from observatory.wandb_log import log_results

    out = report.parent
    emergence = pd.read_parquet(out / "emergence.parquet")
    log_results(pd.read_parquet(out / "results.parquet"), "toy", out, "offline", emergence=emergence,
                charts=[out / "charts" / "mirage-copy.png"])
    files = {f.name: f for f in run_files(out)}
    logged = set(history(files["run-toy-summary-observatory-summary.wandb"])[0])  # media are logged by path
    assert {"results/path", "emergence/path", "charts/mirage-copy/path",
            "curves/capability/copy/exact_match_table/path"} <= logged
    onset = {}
    for record in records(files["run-toy-large-s0-observatory.wandb"]):
        if record.WhichOneof("record_type") == "summary":
            onset |= {item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update}
    expected = emergence[(emergence["run"] == "large-s0") & (emergence["metric"] == "copy/exact_match")]["onset_step"]
    assert float(onset["onset/capability/copy/exact_match"]) == pytest.approx(float(expected.iloc[0]))
