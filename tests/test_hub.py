"""Public checkpoint suites as runs (observatory/hub): revisions read from a hub cache laid out
as huggingface_hub lays it out (tests/fake_hub.py; no network here), probed through
TransformerLens's TransformerBridge, and checked for revisions that are not what their names say."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from fake_hub import publish, publish_model, tiny_model, word_tokenizer

from observatory.hub import integrity
from observatory.hub import repo as hub_repo
from observatory.hub.model import MissingHook, load_hooked
from observatory.hub.suites import checkpoint_revisions, suite_of

transformers = pytest.importorskip("transformers")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty hub cache that this process reads offline (huggingface_hub read its settings at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def text_file(path, n_docs=24, words=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    docs = [" ".join(f"w{i}" for i in torch.randint(60, (words,), generator=g).tolist()) for _ in range(n_docs)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def nudged(model, scale, seed):
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


# ---- naming ---------------------------------------------------------------------------------------
def test_each_suite_names_its_steps_its_own_way():
    assert checkpoint_revisions("EleutherAI/pythia-70m", ["main", "step1000", "step0", "step512"]) == \
        {"step0": 0, "step512": 512, "step1000": 1000}  # in step order; main is not a step
    assert suite_of("EleutherAI/pythia-160m-seed3").tokens_per_step == 1024 * 2048
    assert checkpoint_revisions("stanford-crfm/alias-gpt2-small-x21", ["checkpoint-400000", "checkpoint-0"]) == \
        {"checkpoint-0": 0, "checkpoint-400000": 400000}
    assert suite_of("stanford-crfm/alias-gpt2-small-x21").tokens_per_step == 512 * 1024
    assert checkpoint_revisions("delphi-suite/stories-llama2-100k", ["iter1", "iter400", "main"]) == {"iter1": 1, "iter400": 400}
    assert suite_of("delphi-suite/stories-llama2-100k").tokens_per_step == 256 * 512
    assert checkpoint_revisions("HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints", ["step-240000"]) == {"step-240000": 240000}
    assert suite_of("someone/own-run").tokens_per_step is None  # unknown: tokens are then steps


# ---- the cache ------------------------------------------------------------------------------------
def test_offline_the_cache_lists_branches_and_each_revisions_weights_sha256(cache, tmp_path):
    word_tokenizer(tmp_path / "tok")
    model = tiny_model("gpt_neox", 61, seed=0)
    commits = [publish_model(cache, "org/tiny", "step0", model, tmp_path / "tok"),
               publish_model(cache, "org/tiny", "step1", model, tmp_path / "tok"),  # the same bytes: one blob
               publish_model(cache, "org/tiny", "step2", nudged(model, 0.1, 1))]
    (cache / "models--org--tiny" / "refs" / "refs" / "pr").mkdir(parents=True)
    (cache / "models--org--tiny" / "refs" / "refs" / "pr" / "1").write_text("0" * 40)  # a pull request: not a branch
    assert hub_repo.branches("org/tiny") == dict(zip(["step0", "step1", "step2"], commits))
    files = {rev: hub_repo.weight_files("org/tiny", rev) for rev in ("step0", "step1", "step2")}
    snapshot = hub_repo.snapshot_folder("org/tiny", "step2")
    on_disk = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert files["step2"].files == {"model.safetensors": on_disk}
    assert files["step0"].sha256 == files["step1"].sha256 != files["step2"].sha256
    with pytest.raises(hub_repo.HubError, match="not in the hub cache"):
        hub_repo.branches("org/absent")


def test_revisions_chosen_by_name_or_every_kth_and_a_wrong_name_refused(cache):
    from observatory.hub.source import choose_revisions

    for step in (0, 1, 2, 4, 8, 16, 32):
        publish(cache, "EleutherAI/pythia-tiny", f"step{step}", write_config(cache.parent / f"c{step}", step))
    branches = list(hub_repo.branches("EleutherAI/pythia-tiny"))
    assert list(choose_revisions("EleutherAI/pythia-tiny", None, 3, branches)) == ["step0", "step4", "step32"]
    assert choose_revisions("EleutherAI/pythia-tiny", ["step8", "step1"], None, branches) == {"step1": 1, "step8": 8}
    with pytest.raises(hub_repo.HubError, match=r"\['step3'\] are not checkpoint branches"):
        choose_revisions("EleutherAI/pythia-tiny", ["step3"], None, branches)


def write_config(folder, step):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"step": step}))
    return folder


def test_a_probed_revision_removed_from_the_cache_leaves_the_blobs_another_shares(cache, tmp_path):
    model = tiny_model("gpt_neox", 61, seed=0)
    publish_model(cache, "org/tiny", "step0", model)
    publish_model(cache, "org/tiny", "step1", model)  # the same weight bytes
    snapshot, _ = hub_repo.download("org/tiny", "step0", ["model.safetensors"])
    hub_repo.remove(snapshot)
    assert not snapshot.exists() and list(hub_repo.branches("org/tiny")) == ["step1"]
    assert hub_repo.weight_files("org/tiny", "step1").sha256 == hashlib.sha256(
        (hub_repo.snapshot_folder("org/tiny", "step1") / "model.safetensors").read_bytes()).hexdigest()


def test_a_hub_that_does_not_answer_is_a_clear_error_naming_the_offline_setting(cache, monkeypatch):
    from huggingface_hub import HfApi, constants

    class ConnectError(Exception):  # httpx's: not an OSError
        pass

    def unreachable(*args, **kwargs):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "list_repo_refs", unreachable)
    with pytest.raises(hub_repo.HubError, match="the hub did not answer .*set HF_HUB_OFFLINE=1"):
        hub_repo.branches("EleutherAI/pythia-70m")


def test_registering_again_asks_the_hub_only_for_the_revisions_whose_branch_moved(cache, tmp_path, monkeypatch):
    """Every shard and every re-run registers the repository again: one branch list, and the
    metadata of a revision only when its branch points at another commit than before."""
    from observatory.hub.source import register

    word_tokenizer(tmp_path / "tok")
    for step in (0, 1, 2):
        publish_model(cache, "org/tiny", f"step{step}", tiny_model("gpt_neox", 61, seed=step), tmp_path / "tok")
    asked, weight_files = [], hub_repo.weight_files
    monkeypatch.setattr(hub_repo, "weight_files", lambda repo, rev: asked.append(rev) or weight_files(repo, rev))
    text = dict(text=str(text_file(tmp_path / "docs.jsonl")), max_tokens=300,
                revisions=["step0", "step1", "step2"])  # named: offline, a registered run is otherwise kept as it is
    run_dir = register(tmp_path / "exp", "org/tiny", **text)
    assert asked == ["step0", "step1", "step2"]
    stream = (run_dir / "ngram_stream.safetensors").stat().st_mtime_ns
    register(tmp_path / "exp", "org/tiny", **text)
    assert asked == ["step0", "step1", "step2"]  # nothing moved: nothing asked, the text not cut again
    assert (run_dir / "ngram_stream.safetensors").stat().st_mtime_ns == stream
    publish_model(cache, "org/tiny", "step1", tiny_model("gpt_neox", 61, seed=9), tmp_path / "tok")  # re-uploaded
    register(tmp_path / "exp", "org/tiny", **text)
    assert asked[3:] == ["step1"]
    from train import rundir

    manifest = {row["file"]: row["sha256"] for row in rundir.read_manifest(run_dir)}
    assert manifest["step1"] == hub_repo.weight_files("org/tiny", "step1").sha256  # the new weights' digest


def test_a_revision_whose_bytes_differ_from_the_hubs_sha256_is_refused(cache, tmp_path):
    publish_model(cache, "org/tiny", "step0", tiny_model("gpt_neox", 61, seed=0))
    weights = hub_repo.weight_files("org/tiny", "step0")
    snapshot, cached = hub_repo.download("org/tiny", "step0", list(weights.files))
    assert cached
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)  # a corrupt download
    with pytest.raises(hub_repo.HubError, match="corrupt download"):
        hub_repo.verify(snapshot, weights)


# ---- the hooked model: TransformerLens's bridge against the Hugging Face model itself -----------
@pytest.mark.parametrize("architecture", ["gpt_neox", "llama", "gpt2"])
def test_the_bridges_hooks_are_the_hugging_face_models_own_numbers(tmp_path, architecture):
    word_tokenizer(tmp_path / "tok")
    model = nudged(tiny_model(architecture, 61, seed=0), 0.05, 2)  # not the initial weights: biases and norms nonzero
    model.save_pretrained(tmp_path / "model")
    hooked = load_hooked(tmp_path / "model", tmp_path / "tok", n_ctx=512)
    assert hooked.cfg.n_ctx == 64 and hooked.cfg.n_layer == 2 and hooked.cfg.n_head == 4  # the trained context caps it
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model", attn_implementation="eager").eval()
    tokens = torch.randint(61, (3, 20), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)] + ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    with torch.no_grad():
        logits, cache_ = hooked.run_with_cache(tokens, names_filter=names)
        out = reference(tokens, output_attentions=True, output_hidden_states=True)
    assert logits.abs().max() > 0.05
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=0)
    for layer in range(2):
        torch.testing.assert_close(cache_[f"blocks.{layer}.attn.hook_pattern"], out.attentions[layer], atol=1e-6, rtol=0)
        torch.testing.assert_close(cache_[f"blocks.{layer}.hook_resid_pre"], out.hidden_states[layer], atol=1e-6, rtol=0)
    norms = {name: p for name, p in hooked.named_parameters()}
    assert any(n.startswith("blocks.0.") for n in norms) and any(n.startswith("blocks.1.") for n in norms)
    assert sum(p.numel() for p in norms.values()) == sum(p.numel() for p in reference.parameters())
    if architecture == "gpt_neox":  # Pythia's parallel residual: attention and MLP both read resid_pre
        with pytest.raises(MissingHook, match="parallel residual"):
            hooked.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_mid"])
    else:
        mid = hooked.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_mid"])[1]["blocks.0.hook_resid_mid"]
        assert mid.shape == (3, 20, 32)


# ---- integrity ------------------------------------------------------------------------------------
def test_integrity_finds_copies_by_bytes_and_by_numbers_and_a_revision_off_the_path(tmp_path):
    torch.manual_seed(0)
    start, direction, elsewhere = torch.nn.Linear(64, 64), torch.randn(64, 64), torch.randn(64, 64)

    def at(t, away=None):
        m = torch.nn.Linear(64, 64)
        with torch.no_grad():
            m.weight.copy_(start.weight + t * direction + (away if away is not None else 0))
            m.bias.copy_(start.bias)
        return m

    revisions = {"step0": at(0), "step1": at(0), "step2": at(0.2), "step4": at(0.4, 3 * elsewhere), "step8": at(0.8),
                 "step16": at(0.8), "step32": at(1.6), "step64": at(3.2)}
    # step0/step1: the same files (#83); step8/step16: the same numbers in other files; step4: off the path (#206)
    sha = {rev: rev for rev in revisions} | {"step1": "step0"}
    for rev, m in revisions.items():
        integrity.record(tmp_path, rev, m)
    manifest = [{"file": rev, "step": int(rev[4:]), "sha256": sha[rev]} for rev in revisions]
    table = integrity.table(tmp_path, manifest).set_index("revision")
    assert table.loc["step0", "same_as"] == "step1" and table.loc["step1", "same_as"] == "step0"  # both: which is which?
    assert table.loc["step1", "warning"].startswith("byte-identical to step0")
    assert table.loc["step16", "same_as"] == "step8" and table.loc["step8", "warning"].startswith("numerically identical")
    assert table.loc["step4", "warning"].startswith("off the path from step2 to step32")
    assert (table.loc[["step2", "step32", "step64"], "warning"] == "").all()  # training's path itself: nothing
    assert table.loc["step2", "same_as"] == ""


def test_an_evenly_moving_trajectory_has_no_revision_off_its_path(tmp_path):
    torch.manual_seed(1)
    m = torch.nn.Linear(64, 64)
    manifest = []
    for k in range(8):  # noisy steps forward, as training takes them
        with torch.no_grad():
            m.weight.add_(0.05 * torch.randn(64, 64) + 0.02)
        integrity.record(tmp_path, f"step{k}", m)
        manifest.append({"file": f"step{k}", "step": k, "sha256": str(k)})
    assert (integrity.table(tmp_path, manifest)["warning"] == "").all()


# ---- the whole command, offline -----------------------------------------------------------------
def observatory(cache, *overrides, checkpoints):
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "observatory", f"checkpoints_dir={checkpoints}", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # 30 s: three runs of the whole command in subprocesses
def test_a_suite_in_the_hub_cache_is_probed_checked_and_reported_like_our_own_runs(tmp_path):
    cache = tmp_path / "hub"
    word_tokenizer(tmp_path / "tok")
    model = tiny_model("gpt_neox", 61, seed=0)
    for step in [0, 1, 2, 4, 8]:  # step1: step0's bytes again (Pythia's issue #83)
        revision = model if step <= 1 else nudged(tiny_model("gpt_neox", 61, seed=0), 0.02 * step, step)
        publish_model(cache, "EleutherAI/pythia-tiny", f"step{step}", revision, tmp_path / "tok")
    text = [f"hub.text={text_file(tmp_path / 'docs.jsonl')}", "hub.max_tokens=2000",  # the rest: the n-gram stream
            "+probes/llc@probes.llc=default", "probes.llc.chains=2", "probes.llc.burnin=8", "probes.llc.draws=8"]
    run = observatory(cache, "hub.repo=EleutherAI/pythia-tiny", *text, "experiment_name=suite", checkpoints=tmp_path / "ckpt")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "capability left out: its items are our synthetic tasks' tokens" in run.stdout
    assert run.stdout.count("capability left out") == 1  # said once, not per checkpoint
    assert "pythia-tiny@step1: byte-identical to step0: which step these weights are cannot be told" in run.stdout
    out = tmp_path / "ckpt" / "suite" / "observatory"
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["probe"]) == {"attention", "weights", "loss", "essential_dynamics", "ngram", "llc"}
    assert sorted(set(results["step"])) == [0, 1, 2, 4, 8]
    assert set(results.loc[results["step"] == 8, "tokens"]) == {8 * 2_097_152}  # Pythia's batch
    assert {"induction/max", "prev_token/max", "norm/blocks.1", "norm/total", "icl_score", "kl/2", "mean",
            "healthy"} <= set(results["metric"])
    checked = pd.read_csv(out / "integrity.csv", keep_default_na=False)
    assert list(checked["warning"] != "") == [True, True, False, False, False]  # step0 and step1: which is which?
    assert "The hub revisions checked" in (out / "index.html").read_text()
    from observatory.report.build import analyse

    crosses = [trace for fig in analyse(out.parent, n_boot=10).charts.values() for trace in fig.data
               if "a suspect revision" in str(trace.hovertemplate)]
    assert crosses and all(list(trace.customdata) == [0, 1] for trace in crosses)  # steps 0 and 1, beside the curves
    again = observatory(cache, "hub.repo=EleutherAI/pythia-tiny", *text, "experiment_name=suite",
                        checkpoints=tmp_path / "ckpt")
    assert again.returncode == 0 and "0 probed, 5 already done" in again.stdout  # resumable, idempotent
    other_text = observatory(cache, "hub.repo=EleutherAI/pythia-tiny", "hub.text=kjv", "hub.max_tokens=2000",
                             "experiment_name=suite",
                             checkpoints=tmp_path / "ckpt")
    assert other_text.returncode == 2 and "registered with other probe inputs" in other_text.stderr


# ---- our own run, exported revision by revision: the hub path against the native one ------------
def native_and_through_the_hub(run_dir, cache, tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attention probe's table of a run of ours, and of the same run exported with train.export
    revision by revision into a hub repository (stepN branches) and probed as a hub suite."""
    from conftest import probe_defaults

    from observatory.hub.source import register
    from observatory.sweep.runner import sweep
    from train import rundir
    from train.export import export

    for row in rundir.read_manifest(run_dir):
        publish(cache, "ours/exported", f"step{row['step']}", export(run_dir, tmp_path / "hf" / str(row["step"]), row["step"]))
    register(tmp_path / "hub" / "exported", "ours/exported")
    probes = {"attention": probe_defaults()["attention"]}
    return (sweep(run_dir.parent, probes, progress=False).table,
            sweep(tmp_path / "hub" / "exported", probes, progress=False).table)


def assert_same_scores_and_onsets(native: pd.DataFrame, hubbed: pd.DataFrame) -> pd.Series:
    from observatory.analysis.emergence import emergence_table

    assert len(native) == len(hubbed) > 0 and {"induction/max", "prev_token/max"} <= set(native["metric"])
    both = native.merge(hubbed, on=["step", "metric"], suffixes=("", "_hub"))
    assert len(both) == len(native) and (both["value"] - both["value_hub"]).abs().max() < 1e-4
    assert both["value"].std() > 0.01  # scores that move: the comparison compares something
    onsets = [emergence_table(t.assign(tokens=t["step"]), n_boot=20).set_index("metric")["onset_step"]
              for t in (native, hubbed)]
    pd.testing.assert_series_equal(*onsets, check_names=False)
    return onsets[0]


def test_our_run_exported_revision_by_revision_gives_the_native_head_scores(tmp_path, cache, train_debug):
    run_dir = train_debug(tmp_path / "native", "model.n_layer=2", "model.name=2l")
    assert_same_scores_and_onsets(*native_and_through_the_hub(run_dir, cache, tmp_path))


@pytest.mark.slow
def test_induction_heads_exported_to_the_hub_form_at_the_native_onsets(tmp_path, cache):
    """experiment=induction with its positions in the residual stream (GPT-2 has no other kind:
    train.export), 400 steps: the heads form at ~175-190 in both, to the same step."""
    from conftest import _compose_train

    from train.runner import run_training

    run_dir = run_training(_compose_train(tmp_path / "native", "experiment=induction", "model.positions=residual",
                                          "model.name=2l-res", "trainer.max_steps=400", "logger=none",
                                          "schedule.extra=[25,50,75,125,150,175,225,250,275,325,350,375]"))
    onsets = assert_same_scores_and_onsets(*native_and_through_the_hub(run_dir, cache, tmp_path))
    assert 100 < onsets["induction/max"] < 300 and 100 < onsets["prev_token/max"] < 300


def test_a_hub_models_ngram_statistics_are_counted_on_the_text_after_its_held_out_documents(tmp_path, cache):
    """hub.text stands for the training stream a repository does not ship: its first max_tokens
    tokens are the held-out documents, the rest (joined by end of text, in blocks of n_ctx + 1)
    is counted; here against a count of the file's own words."""
    from observatory.hub.source import register
    from observatory.sweep.ngram_tables import count_training_stream
    from train import rundir

    word_tokenizer(tmp_path / "tok")
    publish_model(cache, "org/tiny", "step0", tiny_model("gpt_neox", 64, seed=0), tmp_path / "tok")  # 61 tokens, 64 logits
    docs = text_file(tmp_path / "docs.jsonl", n_docs=12, words=150)
    run_dir = register(tmp_path / "exp", "org/tiny", text=str(docs), max_tokens=300, stream_tokens=100_000)
    words = [json.loads(line)["text"].split() for line in docs.read_text().splitlines()]
    assert [len(it["suffix_ids"]) for it in rundir.read_probe_items(run_dir)] == [150, 150]  # 300 tokens held out
    stream = [t for doc in words[2:] for t in [0] + [int(w[1:]) + 1 for w in doc]]  # w17 is id 18; 0: end of text
    stream = stream[: len(stream) // 65 * 65]  # whole blocks of n_ctx + 1 = 65
    tables = count_training_stream(run_dir, 2)
    counted = dict(zip(tables.tokens[1].tolist(), tables.counts[1].tolist()))
    assert counted == {t: float(n) for t, n in Counter(stream).items()}
    assert tables.vocab_size == 64  # the model's logits, not the tokenizer's length


def test_a_llama_suite_named_as_delphi_names_it_with_a_bin_revision_holding_an_earlier_ones_numbers(tmp_path, cache):
    """delphi-suite's naming (iterN, 256 x 512 tokens an iteration) on tiny Llamas; iter4 holds
    iter2's weights as a PyTorch .bin: other bytes, the same numbers."""
    from conftest import probe_defaults

    from observatory.hub.source import register
    from observatory.publish import check_revisions
    from observatory.sweep.runner import sweep

    word_tokenizer(tmp_path / "tok")
    iter2 = nudged(tiny_model("llama", 61, seed=0), 0.05, 2)
    publish_model(cache, "delphi-suite/stories-llama2-tiny", "iter1", tiny_model("llama", 61, seed=0), tmp_path / "tok")
    publish_model(cache, "delphi-suite/stories-llama2-tiny", "iter2", iter2, tmp_path / "tok")
    with tempfile.TemporaryDirectory() as folder:
        iter2.config.save_pretrained(folder)
        torch.save(iter2.state_dict(), Path(folder) / "pytorch_model.bin")  # as older uploads hold them
        word_tokenizer(Path(folder))
        publish(cache, "delphi-suite/stories-llama2-tiny", "iter4", Path(folder))
    publish_model(cache, "delphi-suite/stories-llama2-tiny", "main", iter2)  # not a step: left out
    experiment = tmp_path / "delphi"
    run_dir = register(experiment, "delphi-suite/stories-llama2-tiny", text=str(text_file(tmp_path / "d.jsonl")),
                       max_tokens=1000)
    summary = sweep(experiment, {k: v for k, v in probe_defaults().items() if k in ("attention", "loss", "weights")},
                    progress=False)
    assert summary.probed == 3 and not summary.problems
    assert sorted(set(zip(summary.table["step"], summary.table["tokens"]))) == [(1, 131072), (2, 262144), (4, 524288)]
    check_revisions(experiment)
    checked = pd.read_csv(experiment / "observatory" / "integrity.csv", keep_default_na=False).set_index("revision")
    assert checked.loc["iter4", "same_as"] == "iter2" and "numerically identical" in checked.loc["iter4", "warning"]
    assert checked.loc["iter4", "sha256"] != checked.loc["iter2", "sha256"]
    assert run_dir.name == "stories-llama2-tiny"


def test_a_sharded_revision_is_read_whole_and_its_digest_covers_every_shard(tmp_path, cache):
    """pythia-12b's revisions come in shards (issue #206: one shard of step50000 was the final
    model's); the loader needs their index too, which is not a weight file."""
    from observatory.sweep.discovery import list_checkpoints, load

    word_tokenizer(tmp_path / "tok")
    model = tiny_model("gpt_neox", 61, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size="20KB")
        word_tokenizer(Path(folder))
        shards = sorted(p.name for p in Path(folder).glob("model-*.safetensors"))
        assert len(shards) > 1 and (Path(folder) / "model.safetensors.index.json").exists()
        publish(cache, "EleutherAI/pythia-sharded", "step0", Path(folder))
    from observatory.hub.source import register

    run_dir = register(tmp_path / "exp", "EleutherAI/pythia-sharded")
    weights = hub_repo.weight_files("EleutherAI/pythia-sharded", "step0")
    assert sorted(weights.files) == shards
    snapshot = hub_repo.snapshot_folder("EleutherAI/pythia-sharded", "step0")
    lines = "".join(f"{n} {hashlib.sha256((snapshot / n).read_bytes()).hexdigest()}\n" for n in shards)
    assert weights.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    hooked = load(list_checkpoints(run_dir)[0])
    tokens = torch.randint(61, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), model.eval()(tokens).logits, atol=1e-5, rtol=0)


def test_a_repository_without_a_tokenizer_names_the_setting_that_gives_one(tmp_path, cache):
    """delphi-suite's models keep their tokenizer in a repository of its own."""
    from observatory.hub.source import register

    publish_model(cache, "delphi-suite/stories-llama2-tiny", "iter1", tiny_model("llama", 61, seed=0))
    with pytest.raises(hub_repo.HubError, match="hub.tokenizer=<repo>"):
        register(tmp_path / "exp", "delphi-suite/stories-llama2-tiny")
    word_tokenizer(tmp_path / "tok")
    publish(cache, "delphi-suite/stories-tokenizer", "main", tmp_path / "tok", absent=("config.json",))
    run_dir = register(tmp_path / "exp", "delphi-suite/stories-llama2-tiny", tokenizer="delphi-suite/stories-tokenizer")
    assert (run_dir / "tokenizer" / "tokenizer.json").exists()


# ---- the LLC on a hub model ---------------------------------------------------------------------
def llc_settings(**changed):
    from conftest import probe_defaults

    from observatory.probes.llc import settings

    return settings(probe_defaults()["llc"] | changed)


@pytest.mark.parametrize("architecture", ["gpt_neox", "llama", "gpt2"])  # gpt2: its tied unembedding
def test_a_hub_models_llc_is_devinterps_on_the_model_transformers_loads(tmp_path, cache, architecture):
    """Our chains on the model the probe samples (the checkpoint's weights, not the bridge's
    working copies), on hub.text's stream, against devinterp's own `llc` on the revision as
    transformers loads it from the hub cache: the same chains, to float rounding."""
    from transformers import AutoModelForCausalLM

    from observatory.hub.model import Logits
    from observatory.hub.source import register
    from observatory.probes.llc import estimate, sampled_model
    from observatory.sweep.discovery import list_checkpoints, load
    from observatory.sweep.runner import sampling_data

    word_tokenizer(tmp_path / "tok")
    publish_model(cache, "org/tiny", "step0", tiny_model(architecture, 61, seed=0), tmp_path / "tok")
    run_dir = register(tmp_path / "exp", "org/tiny", text=str(text_file(tmp_path / "docs.jsonl")), max_tokens=300,
                       stream_tokens=5_000)
    blocks, mask = sampling_data(run_dir)
    assert blocks.shape[1] == 65 and len(blocks) > 32 and mask.all()  # the stream in blocks, every token in the loss
    s = llc_settings(chains=2, burnin=8, draws=16, batch_size=4, lr=1e-4, n_beta=30.0, localization=100.0)
    ours = estimate(sampled_model(load(list_checkpoints(run_dir)[0])), blocks, mask, s)
    loaded = AutoModelForCausalLM.from_pretrained("org/tiny", revision="step0", dtype=torch.float32)
    for module in loaded.modules():  # devinterp samples in train mode: GPT-2's dropout (0.1) would be on
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    reference = estimate(Logits(loaded), blocks, mask, s, sampler="devinterp")
    assert ours.init_loss == pytest.approx(reference.init_loss, rel=1e-6)
    assert np.allclose(ours.trace, reference.trace, rtol=1e-3)
    assert (ours.trace[:, -1] - ours.init_loss > 0.01).all()  # chains that moved: the comparison compares something


@pytest.mark.slow  # 15 s: two estimates of 6 chains
def test_our_run_through_the_hub_has_the_native_llc(tmp_path, cache, train_debug):
    """Our run's last checkpoint exported with train.export (GPT-2: the same weights, transposed
    and fused otherwise, which SGLD's isotropic noise does not see) and probed as a hub
    revision: the LLC on the same blocks as the native model's, within 2 combined standard errors."""
    from observatory.hub.source import register
    from observatory.probes.llc import estimate, sampled_model
    from observatory.sweep.discovery import list_checkpoints, load
    from observatory.sweep.runner import sampling_data
    from train import rundir
    from train.export import export

    run_dir = train_debug(tmp_path / "native", "model.n_layer=2", "model.name=2l")
    step = rundir.read_manifest(run_dir)[-1]["step"]
    publish(cache, "ours/exported", f"step{step}", export(run_dir, tmp_path / "hf", step))
    hub_model = sampled_model(load(list_checkpoints(register(tmp_path / "hub", "ours/exported"))[0]))
    native = rundir.load_model(run_dir, step)
    assert sum(p.numel() for p in hub_model.parameters()) == sum(p.numel() for p in native.parameters())
    blocks, mask = sampling_data(run_dir)  # the native run's training items, answers alone in the loss
    s = llc_settings(chains=6, draws=64, burnin=32, lr=1e-4, n_beta=30.0, localization=100.0)
    on_hub, at_home = estimate(hub_model, blocks, mask, s), estimate(native, blocks, mask, s)
    assert on_hub.healthy and at_home.healthy, (on_hub.drift, at_home.drift)
    assert abs(on_hub.mean - at_home.mean) <= 2 * np.hypot(on_hub.stderr, at_home.stderr), \
        (on_hub.mean, on_hub.stderr, at_home.mean, at_home.stderr)
    assert not np.allclose(on_hub.per_chain, at_home.per_chain)  # other noise draws: an independent estimate


def test_per_component_llc_on_a_hub_model_is_an_error_before_any_work(tmp_path, cache):
    from observatory.hub.source import register
    from observatory.sweep.runner import SweepError, probes_for

    word_tokenizer(tmp_path / "tok")
    publish_model(cache, "org/tiny", "step0", tiny_model("gpt_neox", 61, seed=0), tmp_path / "tok")
    run_dir = register(tmp_path / "exp", "org/tiny", text=str(text_file(tmp_path / "docs.jsonl")), max_tokens=300)
    with pytest.raises(SweepError, match=r"probes.llc.components=\[\]"):
        probes_for(run_dir, {"llc": {"components": ["heads"]}})


def test_calibrate_chooses_the_llc_settings_on_a_hub_revision(tmp_path, cache):
    """python -m observatory.calibrate hub.repo=... hub.text=...: the repository registered as a
    run (as the sweep registers it), its last revision sampled on the text's stream."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from observatory.calibrate import main as calibrate_main
    from observatory.probes.llc import settings

    word_tokenizer(tmp_path / "tok")
    for step in (0, 4):
        publish_model(cache, "org/tiny", f"step{step}", tiny_model("gpt_neox", 61, seed=step), tmp_path / "tok")
    hub = ["hub.repo=org/tiny", f"hub.text={text_file(tmp_path / 'docs.jsonl')}", "hub.max_tokens=300",
           f"checkpoints_dir={tmp_path / 'ckpt'}", "experiment_name=suite"]
    target = tmp_path / "llc.yaml"
    GlobalHydra.instance().clear()
    assert calibrate_main([*hub, "sampler.chains=2", "sampler.burnin=16", "sampler.draws=32", "sampler.batch_size=4",
                           "grid.lr=[1e-3,3e-3,30.0]", "grid.n_beta=[30]", "grid.localization=[1000]", f"write={target}"]) == 0
    table = pd.read_csv(tmp_path / "ckpt" / "suite" / "observatory" / "calibration" / "tiny-step4.csv")
    assert list(table["passes"]) == [True, True, False]  # a step size of 30 diverges
    chosen = table.loc[table["chosen"], "lr"].item()
    assert settings(OmegaConf.to_container(OmegaConf.load(target))).lr == chosen
    GlobalHydra.instance().clear()
    assert calibrate_main([*hub, "component=L0"]) == 2  # our GPT's components: not on a hub model
