"""The report from a small results table with known curves, checked in a real browser."""

import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from observatory import store
from observatory.analysis.emergence import emergence_table, onsets_over_seeds
from observatory.analysis.stages import STAGE_COLUMNS
from observatory.analysis.tables import mirage_table, onsets_by_size, sizes, tasks
from observatory.report import figures, write_report
from observatory.report.build import analyse
from observatory.report.findings import findings, headline_text
from observatory.report.format import count, interval, value
from train.checkpointing import checkpoint_steps

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STEPS = checkpoint_steps(2000, None, 250)
SIZES = {"small": 1_000, "large": 100_000}
RUNS = {f"{model}-s{seed}" for model in SIZES for seed in (0, 1)}


def sigmoid(center, width_decades):
    x = np.log10(np.array(STEPS) + 1)
    return 1 / (1 + np.exp(-(x - np.log10(center + 1)) / (width_decades / (2 * np.log(9)))))


def results_table() -> pd.DataFrame:
    """exact match jumps sharply (later for the small model); token accuracy rises smoothly;
    the loss is flat; an induction head forms with the jump (layer 1, head 0), the linear
    probe reads the answer from layer 1 after it. Two seeds per size, a little seed noise."""
    rows = []
    for model, n in SIZES.items():
        center = 200 if model == "large" else 800
        for seed in (0, 1):
            rng = np.random.default_rng(seed)
            base = {"experiment": "toy", "run": f"{model}-s{seed}", "model": model, "seed": seed, "n_params": n,
                    "n_params_non_embedding": n, "checkpoint_sha256": "x", "probe_hash": "h"}
            curves = {("capability", "copy/exact_match"): 0.95 * sigmoid(center, 0.25),
                      ("capability", "copy/token_accuracy"): 0.2 + 0.7 * sigmoid(center, 3.0),
                      ("capability", "copy/answer_logprob"): -3 + 2.5 * sigmoid(center, 3.0),
                      ("capability", "copy/train_exact_match"): sigmoid(center / 10, 0.25),  # memorized a decade earlier
                      # a task that only the large model learns: no transition in the small one
                      ("capability", "late/exact_match"): (0.9 if model == "large" else 0.0) * sigmoid(400, 0.3),
                      ("capability", "late/token_accuracy"): 0.2 + 0.5 * sigmoid(4 * center, 3.0),
                      ("attention", "induction/L1H0"): 0.02 + 0.6 * sigmoid(center, 0.3),
                      ("attention", "induction/L0H0"): 0.02 + 0 * sigmoid(center, 0.3),
                      ("attention", "induction/max"): 0.02 + 0.6 * sigmoid(center, 0.3),
                      ("loss", "icl_score"): -0.8 * sigmoid(center, 0.5),
                      ("linear", "copy/layer0"): 0.01 + 0 * sigmoid(center, 0.3),
                      ("linear", "copy/layer1"): 0.01 + 0.9 * sigmoid(center * 1.2, 0.3),
                      ("linear", "copy/best"): 0.01 + 0.9 * sigmoid(center * 1.2, 0.3),
                      ("weights", "norm/total"): 30 - np.array(STEPS) / 100,
                      ("loss", "all"): 2.0 + 0 * sigmoid(center, 1)}
            for (probe, metric), values in curves.items():
                spec = SPECS[metric]
                noise = 0.005 * rng.normal(size=len(STEPS)) if probe in ("capability", "attention", "linear") else 0
                for step, v in zip(STEPS, values + noise):
                    rows.append(base | {"step": step, "tokens": 64 * step, "flops_6nd": 6.0 * n * 64 * step, "probe": probe,
                                        "metric": metric, "value": v} | spec)
    return store.typed(pd.DataFrame(rows, columns=store.COLUMNS))


ACCURACY = dict(kind="accuracy", higher_is_better=True, low=0.0, high=1.0, chance=np.nan, stderr=0.005)
NONE = dict(task=None, split=None, layer=None, head=None, sample=None, unit="", primary=False)
TASK = NONE | dict(task="copy", split="heldout")
SPECS = {  # each curve's spec and identity, as the probes declare them
    "copy/exact_match": ACCURACY | TASK | dict(role="all-or-nothing", label="exact match", primary=True),
    "copy/token_accuracy": ACCURACY | TASK | dict(role="continuous", label="token accuracy", primary=True),
    "copy/answer_logprob": dict(kind="logprob", higher_is_better=True, low=np.nan, high=0.0, chance=np.nan,
                                stderr=0.005) | TASK | dict(role="continuous", label="answer log-probability"),
    "late/exact_match": ACCURACY | TASK | dict(task="late", role="all-or-nothing", label="exact match", primary=True),
    "late/token_accuracy": ACCURACY | TASK | dict(task="late", role="continuous", label="token accuracy", primary=True),
    "copy/train_exact_match": ACCURACY | TASK | dict(split="train", role="all-or-nothing", label="exact match",
                                                     primary=True),
    "induction/L1H0": dict(kind="score", higher_is_better=True, low=0.0, high=1.0, chance=0.02, stderr=0.002) | NONE
    | dict(role="mechanism", label="induction score", layer=1, head=0),
    "induction/L0H0": dict(kind="score", higher_is_better=True, low=0.0, high=1.0, chance=0.02, stderr=0.002) | NONE
    | dict(role="mechanism", label="induction score", layer=0, head=0),
    "induction/max": dict(kind="score", higher_is_better=True, low=0.0, high=1.0, chance=0.02, stderr=0.002) | NONE
    | dict(role="mechanism", label="induction-head score", primary=True),
    "icl_score": dict(kind="score", higher_is_better=False, low=np.nan, high=np.nan, chance=np.nan, stderr=0.01) | NONE
    | dict(role="mechanism", label="in-context learning score", split="heldout", primary=True),
    "copy/layer0": dict(ACCURACY, chance=0.01) | TASK | dict(role="representation", label="linear probe accuracy", layer=0),
    "copy/layer1": dict(ACCURACY, chance=0.01) | TASK | dict(role="representation", label="linear probe accuracy", layer=1),
    "copy/best": dict(ACCURACY, chance=0.01) | TASK | dict(role="representation", label="linear probe accuracy, best layer",
                                                           primary=True),
    "norm/total": dict(kind="norm", higher_is_better=True, low=0.0, high=np.nan, chance=np.nan, stderr=np.nan) | NONE
    | dict(role="weights", label="weight norm, all parameters", primary=True),
    "all": dict(kind="loss", higher_is_better=False, low=0.0, high=np.nan, chance=np.nan, stderr=0.001) | NONE
    | dict(role="loss", label="held-out loss", split="heldout", primary=True)}


@pytest.fixture(scope="module")
def built(report):
    """The toy report's tables, findings and charts, as write_report made them."""
    return analyse(report.parent.parent, n_boot=20)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    experiment = tmp_path_factory.mktemp("report") / "toy"
    out = store.output_dir(experiment)
    store.write_parquet(out / "results.parquet", results_table())
    return write_report(experiment, n_boot=20)


def test_report_tables_find_the_planted_onsets(report):
    out = report.parent
    emergence = pd.read_csv(out / "tables" / "emergence.csv")
    exact = emergence[emergence["metric"] == "copy/exact_match"].set_index("run")
    assert exact["has_onset"].all()
    assert all(150 < exact.loc[f"large-s{s}", "onset_step"] < 270 for s in (0, 1))
    assert all(600 < exact.loc[f"small-s{s}", "onset_step"] < 1100 for s in (0, 1))
    assert not emergence[emergence["metric"] == "all"]["has_onset"].any()  # flat loss: no onset
    assert set(pd.read_json(out / "tables" / "emergence.json")["metric"]) == set(emergence["metric"])
    mirage = pd.read_csv(out / "tables" / "mirage.csv")
    assert mirage.loc[mirage["task"] == "copy", "mirage"].all()  # exact match sharp, continuous metrics smooth
    assert not mirage.loc[(mirage["task"] == "late") & (mirage["model"] == "small"), "mirage"].any()  # no onset to ask of
    seeds = pd.read_csv(out / "tables" / "onsets_over_seeds.csv").set_index(["model", "metric"])
    large = seeds.loc[("large", "copy/exact_match")]
    assert large["n_seeds"] == 2 and large["ci_low_step"] <= large["onset_step"] <= large["ci_high_step"]
    assert 150 < large["ci_low_step"] and large["ci_high_step"] < 270  # two close seeds: a narrow interval
    assert not seeds.loc[("small", "all"), "has_onset"]
    scale = pd.read_csv(out / "tables" / "scale.csv")
    row = scale[(scale["metric"] == "copy/exact_match")].set_index("model")
    assert row.loc["large", "onset_tokens"] < row.loc["small", "onset_tokens"]
    assert set(row["smallest_size_reaching_threshold"]) == {"small"}
    by_size = pd.read_csv(out / "tables" / "onsets_by_size.csv").set_index(["model", "metric"])  # the emergence map's table
    assert by_size.loc[("large", "copy/exact_match"), "onset_step"] == pytest.approx(large["onset_step"])
    assert by_size.loc[("large", "copy/exact_match"), "interval"] == "seeds"


def test_the_headline_names_what_emerged_where_and_when():
    results = results_table()
    emergence, over_seeds = emergence_table(results, n_boot=0), onsets_over_seeds(results, n_boot=20)
    lines = headline_text(findings(results, onsets_by_size(emergence, over_seeds), mirage_table(emergence)))
    emerged = next(line for line in lines if line.startswith("copy (exact match) emerged in "))
    small, large = emerged.split("small at step ")[1], emerged.split("large at step ")[1]
    assert 600 < float(small.split()[0].rstrip("k")) * (1000 if small.split()[0].endswith("k") else 1) < 1100
    assert 150 < float(large.split()[0]) < 270  # steps below 1000 print as plain numbers
    assert emerged.endswith("earlier in larger models.")
    assert any(line.startswith("copy looks abrupt only under exact match in small (2 of 2 seeds), large (2 of 2 seeds)")
               for line in lines)
    assert any(line.startswith("The induction-head score (attention/induction/max) has a transition in small") for line in lines)


def test_numbers_are_written_for_people():
    assert [count(v) for v in (0, 27.4, 253.8, 2394.2, 1.2e6, 3.47e12, None)] == ["0", "27", "254", "2.39k", "1.2M", "3.47T", "—"]
    assert [value(v) for v in (0.07234, 0.688, 1.0, -1.2345, 0.0)] == ["0.0723", "0.688", "1.00", "-1.23", "0.00"]
    assert (interval(2322.3, 2528.4), interval(1388.2, 1390.7), interval(None, 5)) == ("[2.32k–2.53k]", "[1,388–1,391]", "")


def test_whole_model_stage_boundaries_are_drawn_on_their_runs_curves(report):
    out = report.parent
    stages = pd.DataFrame({"run": ["large-s0", "large-s0"], "signal": ["llc", "llc/L0H0"], "boundary_step": [200, 90],
                           "low_step": [150, 80], "high_step": [260, 100], "interval_steps": [110, 20], "found_in": [0.9, 1.0]})
    assert list(stages.columns) == STAGE_COLUMNS
    results = pd.read_parquet(out / "results.parquet")
    curves = figures.Curves(results, sizes(results), pd.read_parquet(out / "tables" / "onsets_by_size.parquet"))
    task = next(t for t in tasks(results) if t.name == "copy")
    fig = figures.task_figure(task, curves, stages)
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(bands) == 2 and {(b.x0, b.x1) for b in bands} == {(150, 260)}  # on both panels
    assert figures.stage_captions(curves.model_of, stages) == ["large-s0: step 200 [150–260] (llc)"]
    assert all(b.fillcolor == curves.colors["large"] for b in bands)  # in the colour of the run's size


def test_the_page_is_one_offline_file_with_plotly_once(report):
    page = report.read_text()
    assert page.count("plotly.js v") == 1  # the library, inline, once
    after_library = page.split("plotly.js v", 1)[1].split("</script>", 1)[1]
    assert "<link" not in page and "src=" not in after_library and "http" not in after_library  # nothing to fetch
    assert page.count("Plotly.newPlot(") >= 5
    assert "<img" not in page  # charts are plotly figures; the PNGs stay beside the page
    flat = page.split('id="flat-weights"')[1].split("</table>")[0]  # a curve with no transition: listed, not drawn
    assert "weight norm, all parameters" in flat and 'id="flat-loss"' in page
    if not CHROMIUM:  # kaleido draws the PNGs in a local Chrome or Chromium
        assert "no PNG charts" in page
        return
    charts = {p.name for p in (report.parent / "charts").glob("*.png")}
    assert {"curve-capability-copy-exact_match.png", "heatmap-capability-copy-exact_match.png",
            "onset-vs-compute.png", "mirage-copy.png", "curve-loss-all.png", "generalization-copy.png"} <= charts
    for png in (report.parent / "charts").glob("*.png"):  # each static chart a PNG file
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png.name



CHART_RUNS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (gd) {
  var runs = {};
  gd._fullData.forEach(function (t) {  // the traces as drawn: arrays decoded from the page's base64 figure JSON
    var values = Array.from(t.z ? [].concat.apply([], Array.from(t.z, function (r) { return Array.from(r); })) : (t.y || []));
    if (t.meta && t.meta.runs && values.some(function (v) { return v !== null && isFinite(v); }))
      t.meta.runs.forEach(function (r) { runs[r] = true; });
  });
  return [gd.layout.meta.chart, Object.keys(runs).sort()];
});
"""


@pytest.mark.skipif(not (CHROMIUM and shutil.which("chromedriver")), reason="needs Debian's chromium and chromium-driver")
def test_report_loads_offline_in_a_real_browser(report):
    from PIL import Image
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        driver.get(report.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
        assert "Emergence report: toy" in driver.title + driver.find_element("tag name", "h1").text

        top = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"), dtype=float)
        assert top.std() > 20 and (top < 200).mean() > 0.02, "the top of the page looks blank"

        headline = driver.find_element("css selector", "ul.headline").text
        assert "copy (exact match) emerged in small at step" in headline and "large at step" in headline

        charts = driver.execute_script(CHART_RUNS)
        assert len(charts) >= 5
        for name, runs in charts:
            assert set(runs) == RUNS, f"chart {name!r} draws {runs}, not every run"
        assert {"task copy", "mechanisms", "attention heads", "linear probes", "onset vs compute", "mirage copy",
                "size axis copy"} <= {n for n, _ in charts}

        targets = driver.execute_script("return Array.from(document.querySelectorAll('table.map a'), a => a.hash)")
        assert targets and all(driver.execute_script(f"return !!document.querySelector('{t}')") for t in set(targets))

        table = driver.find_element("id", "tbl-emergence")
        driver.execute_script("arguments[0].open = true", table.find_element("xpath", "ancestor::details"))
        box = driver.find_element("css selector", 'input[data-table="tbl-emergence"]')
        box.send_keys("large-s1 copy/ exact_match")
        shown = [r.text for r in table.find_elements("css selector", "tbody tr") if r.is_displayed()]
        assert len(shown) == 2 and all("large-s1" in r and "exact_match" in r for r in shown)  # held-out and trained
        header = table.find_element("xpath", ".//th[normalize-space()='onset step']")
        header.click()
        header.click()  # descending: the later onset (held-out items) first
        shown = [r for r in table.find_elements("css selector", "tbody tr") if r.is_displayed()]
        assert "copy/exact_match" in shown[0].text and "train_exact_match" in shown[1].text
    finally:
        driver.quit()


@pytest.mark.slow  # 40 s (training, probing, the report's PNGs): the default suite keeps to 5 minutes
def test_pipeline_on_a_test_sized_experiment(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "observatory.pipeline", f"checkpoints_dir={tmp_path}", "debug=default",
         "model=13k", "data=suite", "data.probe_items=16", "wandb.mode=disabled"],  # model: not quickstart's sweep
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "quickstart" / "observatory"
    # steps 0 1 2 4 8 10 16 20 30 32 40
    assert "1 runs, 11 checkpoints: 11 probed, 0 already done, 0 failed" in result.stdout
    # the observatory stage ends with what emerged, in the report headline's words, then the
    # report; the pipeline's own last line is its time
    headline = (out / "headline.txt").read_text().splitlines()
    end = result.stdout.split("what emerged:\n")[1].splitlines()
    assert headline and end[: min(len(headline), 6)] == [f"  {line}" for line in headline[:6]]
    assert end[-2] == f"report: {out / 'index.html'}" and re.fullmatch(r"done in \d+s", end[-1])
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["run"]) == {"13k-s0"} and sorted(results["step"].unique()) == [0, 1, 2, 4, 8, 10, 16, 20, 30, 32, 40]
    assert "essential_dynamics" in set(results["probe"])  # on by default: a signal of stages, not a curve with an onset
    minima = pd.read_csv(out / "tables" / "ngram_minima.csv")  # on by default too: curves read for their minimum
    assert {"kl/1", "kl/2", "kl/3"} <= set(minima["metric"])
    results = results[~results["probe"].isin(["essential_dynamics", "ngram"])]
    # the report's table is of these results: a row per curve, from its first to its last checkpoint's value
    emergence = pd.read_csv(out / "tables" / "emergence.csv").set_index(["probe", "metric"])
    first, last = (results[results["step"] == s].set_index(["probe", "metric"])["value"] for s in (0, 40))
    assert sorted(emergence.index) == sorted(last.index) and set(emergence["run"]) == {"13k-s0"}
    assert emergence["start_value"].to_numpy() == pytest.approx(first.loc[emergence.index].to_numpy(), nan_ok=True)
    assert emergence["final_value"].to_numpy() == pytest.approx(last.loc[emergence.index].to_numpy(), nan_ok=True)
    page = (out / "index.html").read_text()
    assert "Emergence report: quickstart" in page and '<section id="stages">' in page and 'id="statistics"' in page
    assert (out / "charts" / "essential-dynamics-13k-s0.png").read_bytes()[:4] == b"\x89PNG"


def test_wandb_gets_curves_onsets_tables_and_images(report, built):
    from wandb_offline import history, recorded_exit_code, records, run_files

    from observatory.report.wandb_log import log_results

    out = report.parent
    emergence = built.tables["emergence"]
    log_results(pd.read_parquet(out / "results.parquet"), "toy", out, "offline", built)
    files = {f.name: f for f in run_files(out)}
    assert all(recorded_exit_code(f) == 0 for f in files.values())
    logged = set(history(files["run-toy-summary.wandb"])[0])  # media are logged by path
    # the emergence map, the stage boundaries, each task's curves across sizes: panels without chart building
    assert {"results/path", "emergence/path", "emergence_map/path", "stages/path", "charts/mirage-copy/path",
            "curves/capability/copy/exact_match_table/path", "curves/capability/copy/token_accuracy_table/path"} <= logged
    onset = {}
    for record in records(files["run-toy-large-s0-observatory.wandb"]):
        if record.WhichOneof("record_type") == "summary":
            onset |= {item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update}
    expected = emergence[(emergence["run"] == "large-s0") & (emergence["metric"] == "copy/exact_match")]["onset_step"]
    assert float(onset["onset/capability/copy/exact_match"]) == pytest.approx(float(expected.iloc[0]))
    summary = {}
    for record in records(files["run-toy-summary.wandb"]):
        if record.WhichOneof("record_type") == "summary":
            summary |= {item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update}
    assert json.loads(summary["headline"]).splitlines() == headline_text(built.found)  # the console's sentences


@pytest.mark.slow  # 13 s: rebuilds a whole report with its PNGs; the default suite keeps to 5 minutes
def test_the_report_command_rebuilds_any_experiments_report_and_refuses_one_with_no_results(report, tmp_path, capsys):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from observatory.report.__main__ import main

    def report_command(*overrides) -> int:  # python -m observatory.report <overrides>, in this process
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return main(compose(config_name="observatory", overrides=[f"checkpoints_dir={tmp_path}", *overrides]))

    experiment = tmp_path / "toy"
    shutil.copytree(report.parent.parent, experiment)
    (experiment / "observatory" / "index.html").unlink()
    (experiment / "observatory" / "emergence.csv").write_text("run\nstale\n")  # where tables lay before tables/
    assert report_command("experiment_name=toy") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {experiment / 'observatory' / 'index.html'}"
    assert "Emergence report: toy" in (experiment / "observatory" / "index.html").read_text()
    assert not (experiment / "observatory" / "emergence.csv").exists()
    assert report_command("experiment_name=nothing") == 2
    assert "probe the checkpoints first: python -m observatory" in capsys.readouterr().err


# ---- the report reads what metrics are, never their names ----------------------------------------
def test_renamed_metrics_leave_the_report_unchanged(report, built, tmp_path):
    """Every metric renamed to an opaque name, identity unchanged: the same onsets, tables and
    sentences (but for the names themselves)."""
    results = pd.read_parquet(report.parent / "results.parquet")
    names = {m: f"m{i:02d}" for i, m in enumerate(sorted(results["metric"].unique()))}
    renamed = tmp_path / "toy"
    store.write_parquet(store.output_dir(renamed) / "results.parquet", results.assign(metric=results["metric"].map(names)))
    before, after = built, analyse(renamed, n_boot=20)

    back = {new: old for old, new in names.items()}
    for name in ("emergence", "onsets_by_size", "mirage", "scale"):
        theirs = after.tables[name].assign(metric=after.tables[name]["metric"].map(back))
        key = [c for c in ("run", "model", "probe", "metric", "task") if c in theirs]
        pd.testing.assert_frame_equal(theirs.sort_values(key, ignore_index=True),
                                      before.tables[name].sort_values(key, ignore_index=True), check_like=True)
    lines = headline_text(after.found)
    for old, new in names.items():
        lines = [line.replace(f"/{new})", f"/{old})") for line in lines]  # a mechanism's sentence names its metric
    assert lines == headline_text(before.found) and len(lines) >= 3
    charts = set(after.charts)  # a curve's chart is named after its metric
    for old, new in names.items():
        charts = {c.removesuffix(f"-{new}") + f"-{old.replace('/', '-')}" if c.endswith(f"-{new}") else c for c in charts}
    assert charts == set(before.charts)


def agreement_results() -> pd.DataFrame:
    """A task scored by agreement (grammar): the all-or-nothing agreement jumps, its continuous
    probability rises smoothly; one seed per size."""
    rows = []
    for model, n in SIZES.items():
        center = 200 if model == "large" else 800
        base = {"experiment": "toy", "run": f"{model}-s0", "model": model, "seed": 0, "n_params": n,
                "n_params_non_embedding": n, "checkpoint_sha256": "x", "probe_hash": "h"}
        task = NONE | dict(task="grammar", split="heldout")
        curves = {"grammar/agreement": (0.5 + 0.48 * sigmoid(center, 0.25), ACCURACY | task | dict(
                      chance=0.5, role="all-or-nothing", label="agreement", primary=True)),
                  "grammar/agreement_prob": (0.5 + 0.4 * sigmoid(center, 3.0), dict(
                      kind="score", higher_is_better=True, low=0.0, high=1.0, chance=0.5, stderr=0.005) | task | dict(
                      role="continuous", label="agreement probability"))}
        for metric, (values, spec) in curves.items():
            for step, v in zip(STEPS, values):
                rows.append(base | {"step": step, "tokens": 64 * step, "flops_6nd": 6.0 * n * 64 * step,
                                    "probe": "capability", "metric": metric, "value": v} | spec)
    return store.typed(pd.DataFrame(rows, columns=store.COLUMNS))


def test_the_mirage_question_is_asked_of_a_task_scored_by_agreement():
    results = agreement_results()
    emergence = emergence_table(results, n_boot=0)
    mirage = mirage_table(emergence).set_index("run")
    assert list(mirage["task"]) == ["grammar", "grammar"] and mirage["mirage"].all()
    assert set(mirage["label"]) == {"agreement"} and set(mirage["continuous"]) == {"agreement probability"}
    lines = headline_text(findings(results, onsets_by_size(emergence, onsets_over_seeds(results, n_boot=0)),
                                   mirage_table(emergence)))
    assert ("grammar looks abrupt only under agreement in small, large: its agreement probability rises more "
            "gradually there (the mirage question).") in lines


MIRAGE_STEPS = checkpoint_steps(3000, None, 100)


def answer_results(token_accuracies: list[np.ndarray], exact_match: np.ndarray) -> pd.DataFrame:
    """One run of a task with a 4-token answer: its exact match, and the continuous metrics
    of its per-token accuracies (their mean; the token edit distance and the answer
    log-probability the errors would give)."""
    p = np.mean(token_accuracies, axis=0)
    task = NONE | dict(task="add", split="heldout")
    curves = {"add/exact_match": (exact_match, ACCURACY | task | dict(role="all-or-nothing", label="exact match")),
              "add/token_accuracy": (p, ACCURACY | task | dict(role="continuous", label="token accuracy")),
              "add/edit_distance": (1 - p, ACCURACY | task | dict(higher_is_better=False, role="continuous",
                                                                  label="token edit distance")),
              "add/answer_logprob": (np.mean(np.log(0.01 + 0.99 * np.array(token_accuracies)), axis=0), dict(
                  kind="logprob", higher_is_better=True, low=np.nan, high=0.0, chance=np.nan, stderr=0.005) | task
                  | dict(role="continuous", label="answer log-probability"))}
    base = {"experiment": "toy", "run": "m-s0", "model": "m", "seed": 0, "n_params": 1000,
            "n_params_non_embedding": 1000, "checkpoint_sha256": "x", "probe_hash": "h", "probe": "capability"}
    rows = [base | {"step": step, "tokens": 64 * step, "flops_6nd": 6e3 * 64 * step, "metric": metric, "value": v} | spec
            for metric, (values, spec) in curves.items() for step, v in zip(MIRAGE_STEPS, values)]
    return store.typed(pd.DataFrame(rows, columns=store.COLUMNS))


def rising(center: float, width_decades: float) -> np.ndarray:
    x = np.log10(np.array(MIRAGE_STEPS) + 1)
    return 1 / (1 + np.exp(-(x - np.log10(center + 1)) / (width_decades / (2 * np.log(9)))))


def test_exact_match_as_the_product_of_smoothly_rising_token_accuracies_is_a_mirage():
    # each answer token is learned at its own time (half a decade each, 60 to 1000 steps): their mean rises
    # smoothly over 1.5 decades, while all four are right together only once the last one is
    tokens = [rising(center, 0.5) for center in (60, 150, 400, 1000)]
    mirage = mirage_table(emergence_table(answer_results(tokens, np.prod(tokens, axis=0)), n_boot=0)).iloc[0]
    assert mirage["mirage"] and mirage["abruptness"] > 2 * mirage["sharpest_continuous_abruptness"]
    assert set(mirage["continuous_with_onset"].split("; ")) == {"token accuracy", "token edit distance",
                                                                 "answer log-probability"}
    assert mirage["first_continuous_onset"] < mirage["onset_step"]


@pytest.mark.parametrize("case", ["as fast as its tokens", "four alike tokens"])
def test_exact_match_no_faster_than_its_tokens_is_no_mirage(case):
    if case == "as fast as its tokens":  # the same rise as the token accuracy, later
        tokens, exact = [rising(200, 1.0)] * 4, rising(600, 1.0)
    else:  # tokens learned together: p^4 rises only ~1.2 times as abruptly as p
        tokens = [rising(300, 1.0)] * 4
        exact = np.prod(tokens, axis=0)
    mirage = mirage_table(emergence_table(answer_results(tokens, exact), n_boot=0)).iloc[0]
    assert not mirage["mirage"] and mirage["abruptness"] < 2 * mirage["sharpest_continuous_abruptness"]


def test_a_finding_is_one_record_rendered_as_text_and_as_html():
    from markupsafe import Markup

    from observatory.report.findings import Emerged, SizeOnset, sentence

    found = Emerged("a<b", "exact match", (SizeOnset("100k", 2394.2, 2322.3, 2528.4, 0.287, "items", 1, 1),),
                    (SizeOnset("13k", None, None, None, 0.01, None, 0, 2, ((0, None), (1, 900.0))),), None)
    text, html = sentence(found), sentence(found, html=True)
    assert text == ("a<b (exact match) emerged in 100k at step 2.39k [2.32k–2.53k] → 0.287; "
                    "not in 13k (0.0100 at the end; seed 1 alone at 900).")
    assert '<a href="#task-a-b"><b>a&lt;b</b></a>' in html and "<b>100k</b>" in html  # escaped, linked, bold
    assert Markup(re.sub(r"<[^>]+>", "", html)).unescape() == text  # the same sentence


def test_a_table_asked_for_a_column_it_lacks_is_an_error(report):
    import jinja2

    from observatory.report import page

    emergence = pd.read_parquet(report.parent / "tables" / "emergence.parquet")
    with pytest.raises(KeyError, match=r"has no column\(s\) \['steepest_step'\]"):
        page.table_block("curves", "emergence.csv", emergence.drop(columns="steepest_step"), page.EMERGENCE_COLUMNS, "t")
    with pytest.raises(jinja2.UndefinedError):  # the page's template: anything missing fails, never a blank
        page._ENV.get_template("page.html.j2").render(title="x")


def test_every_chart_is_one_figure_for_the_page_the_pngs_and_wandb(report, built):
    page = report.read_text()
    for name in ("task-copy", "mechanisms", "heads", "linear", "onset-vs-compute", "mirage-copy", "mirage-size-copy"):
        assert f'"chart":"{built.charts[name].layout.meta["chart"]}"' in page.replace(": ", ":")
    if CHROMIUM:
        assert {p.stem for p in (report.parent / "charts").glob("*.png")} == set(built.charts)  # every chart, only those


def test_the_size_axis_shows_each_sizes_final_value_over_seeds(built):
    """Schaeffer et al.'s view: per size, the mean over seeds of the last checkpoint's value,
    whiskers to the lowest and highest seed, at the size's parameter count."""
    results = built.results
    fig = built.charts["mirage-size-copy"]
    traces = {t.hovertemplate.split("<br>")[1].split(" at the end")[0]: t for t in fig.data}
    final = results[(results["metric"] == "copy/exact_match") & (results["step"] == results["step"].max())]
    by_size = final.groupby("n_params_non_embedding")["value"]
    exact = traces["exact match"]
    assert list(exact.x) == sorted(SIZES.values())
    np.testing.assert_allclose(exact.y, by_size.mean().to_numpy())
    np.testing.assert_allclose(np.array(exact.y) + exact.error_y.array, by_size.max().to_numpy())
    np.testing.assert_allclose(np.array(exact.y) - exact.error_y.arrayminus, by_size.min().to_numpy())
    assert set(traces) == {"exact match", "token accuracy", "answer log-probability"}


def test_without_a_browser_for_kaleido_the_report_says_why_and_writes_no_png(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))  # where kaleido looks first
    written, why = figures.write_images({"chart": go.Figure(go.Scatter(x=[1, 2], y=[1, 2]))}, tmp_path / "charts")
    assert written == [] and not list((tmp_path / "charts").iterdir())
    assert why.startswith("no PNG charts (") and "Chromium" in why
