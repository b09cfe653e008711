"""The ngram probe against models whose answer is known: a model that predicts with the corpus's
own bigram (or unigram) table, counted independently here with Counter; and the in-context
estimates against a direct count, position by position."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from observatory.probes import PROBES
from observatory.probes.context import Context
from observatory.probes.ngram import NgramTables, Settings, icl_kl
from train.model_config import GPTConfig

V = 12


def markov_blocks(n_blocks: int = 400, length: int = 33, seed: int = 0) -> torch.Tensor:
    """A corpus from a sparse Markov chain (each token has 3 successors), cut into blocks."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(V)])
    stream = [0]
    for _ in range(n_blocks * length - 1):
        stream.append(int(successors[stream[-1], torch.randint(3, (1,), generator=g)]))
    return torch.tensor(stream).view(n_blocks, length)


def counted(blocks: torch.Tensor, reads: torch.Tensor):
    """Unigram and bigram tables by hand: Counter over the windows of each block."""
    uni, bi = Counter(), Counter()
    for block, r in zip(blocks.tolist(), reads.tolist()):
        for a in block:
            uni[a] += r
        for a, b in zip(block, block[1:]):
            bi[a, b] += r
    total = sum(uni.values())
    p1 = torch.tensor([uni[a] / total for a in range(V)], dtype=torch.float64)
    p2 = torch.zeros(V, V, dtype=torch.float64)
    for (a, b), c in bi.items():
        p2[a, b] = c
    seen = p2.sum(1) > 0
    p2[seen] /= p2[seen].sum(1, keepdim=True)
    p2[~seen] = p1  # a context never seen: the unigram
    return p1, p2


class TableModel:
    """Not a GPT: its next-token distribution after token a is table[a] (bigram), or the same
    vector everywhere (unigram)."""

    def __init__(self, table: torch.Tensor, n_ctx: int):
        self.table, self.cfg = table, GPTConfig(vocab_size=V, n_layer=1, n_ctx=n_ctx)

    def __call__(self, tokens):
        probs = self.table[tokens] if self.table.dim() == 2 else self.table.expand(*tokens.shape, V)
        return probs.log().float()

    def run_with_cache(self, tokens, names_filter=None):
        return self(tokens), {}


SETTINGS = dict(max_order=3, sampled_orders=[1, 2], icl_orders=[1, 2], n_sampled=64, max_positions=2048, seed=0)


def run_probe(model, tables, heldout, sampled=None, documents=None):
    settings = Settings(**SETTINGS)
    inputs, targets = {"blocks": heldout[:, :-1]}, {"blocks": heldout[:, 1:]}
    sampled = {f"sampled/{n}": tables.sample(n, settings.n_sampled, 33, torch.Generator().manual_seed(0))
               for n in settings.sampled_orders} | (sampled or {})
    for name, seqs in sampled.items():
        inputs[name], targets[name] = seqs[:, :-1], seqs[:, 1:]
    if documents is not None:
        inputs["documents"], targets["documents"] = documents[:, :-1], documents[:, 1:]
    ctx = Context(model, inputs, {}, targets=targets, ngrams=tables)
    return PROBES["ngram"].fn(ctx, settings)


@pytest.fixture(scope="module")
def corpus():
    blocks = markov_blocks()
    reads = torch.randint(0, 3, (len(blocks),), generator=torch.Generator().manual_seed(1))  # some blocks never read
    return blocks, reads, NgramTables.count(blocks, reads, V, 3), *counted(blocks, reads)


def test_the_tables_hold_the_counts_of_what_training_read(corpus):
    blocks, reads, tables, p1, p2 = corpus
    k, toks, probs = tables.predictive(torch.zeros(1, 0, dtype=torch.long), 1)
    assert torch.allclose(torch.zeros(V, dtype=torch.float64).index_put_((toks,), probs), p1)
    history = torch.arange(V)[:, None]
    k, toks, probs = tables.predictive(history, 2)
    assert torch.allclose(torch.zeros(V, V, dtype=torch.float64).index_put_((k, toks), probs), p2)


def test_a_model_equal_to_the_bigram_table_has_no_kl_to_it(corpus):
    blocks, reads, tables, p1, p2 = corpus
    heldout = markov_blocks(40, 33, seed=0)[::4]  # the same chain
    metrics = run_probe(TableModel(p2, 32), tables, heldout)
    assert abs(metrics["kl/2"].value) < 1e-6
    assert metrics["kl/1"].value > 0.5  # the bigram chain is far from its unigram
    assert metrics["kl/3"].value > 1e-3  # the trigram knows more than the bigram (the counts' noise, at least)


def test_a_model_equal_to_the_unigram_table_has_no_kl_to_it(corpus):
    blocks, reads, tables, p1, p2 = corpus
    metrics = run_probe(TableModel(p1, 32), tables, markov_blocks(40, 33, seed=0))
    assert abs(metrics["kl/1"].value) < 1e-6
    assert metrics["kl/2"].value > 0.5


def test_the_bigram_models_loss_on_bigram_samples_is_the_bigram_entropy(corpus):
    blocks, reads, tables, p1, p2 = corpus
    sampled = {"sampled/2": tables.sample(2, 400, 33, torch.Generator().manual_seed(3))}
    loss = run_probe(TableModel(p2, 32), tables, markov_blocks(10, 33), sampled)["loss_sampled/2"]
    logp2 = torch.where(p2 > 0, p2.log(), torch.zeros_like(p2))
    entropy = float(-(p1[:, None] * p2 * logp2).sum())  # Σ_a p(a) H(· | a): the chain starts from the unigram
    assert abs(loss.value - entropy) < 2 * loss.stderr, (loss.value, entropy, loss.stderr)


def test_a_context_never_seen_backs_off_to_the_next_lower_order():
    blocks = torch.tensor([[1, 2, 3, 1, 2, 4]])
    tables = NgramTables.count(blocks, torch.ones(1, dtype=torch.long), 6, 3)
    k, toks, probs = tables.predictive(torch.tensor([[1, 2], [3, 2], [5, 5]]), 3)
    dist = {(int(a), int(b)): float(p) for a, b, p in zip(k, toks, probs)}
    assert dist[0, 3] == dist[0, 4] == 0.5  # trigram context (1, 2): seen twice
    assert dist[1, 3] == dist[1, 4] == 0.5  # (3, 2) never seen: the bigram after 2
    assert dist[2, 1] == pytest.approx(2 / 6)  # 5 never seen at all: the unigram


def test_in_context_estimates_match_a_direct_count():
    g = torch.Generator().manual_seed(0)
    docs = torch.randint(0, 5, (3, 20), generator=g)
    logq = torch.randn(3, 20, V, generator=g).log_softmax(-1)
    for order in (1, 2):
        kl, exists = icl_kl(docs, logq, order)
        for d in range(3):
            seq = docs[d].tolist()
            for t in range(20):
                if order == 1:
                    seen = Counter(seq[: t + 1])
                else:
                    seen = Counter(seq[j + 1] for j in range(t) if seq[j] == seq[t])
                assert bool(exists[d, t]) == bool(seen)
                if seen:
                    n = sum(seen.values())
                    expected = sum(c / n * (math.log(c / n) - float(logq[d, t, w])) for w, c in seen.items())
                    assert float(kl[d, t]) == pytest.approx(expected, abs=1e-6)  # float32 normalizer


def test_a_copying_model_matches_the_documents_own_bigram_statistics():
    """On documents that repeat a sequence of distinct tokens, the in-context bigram estimate is a
    point mass on the next token of the earlier copy: a model that puts all its mass there has
    icl_kl/2 of 0, and a model that ignores the context does not."""
    r = torch.randperm(V, generator=torch.Generator().manual_seed(0))[:8]
    docs = torch.cat([r, r, r, r])[None].repeat(4, 1)  # (4, 32)
    copy = torch.full((4, 31, V), -30.0)
    copy[:, torch.arange(31), docs[0, 1:]] = 0.0
    kl, exists = icl_kl(docs[:, :-1], copy.log_softmax(-1), 2)
    assert exists[:, 8:].all() and kl[:, 8:].abs().max() < 1e-6
    flat, _ = icl_kl(docs[:, :-1], torch.zeros(4, 31, V).log_softmax(-1), 2)
    assert flat[:, 8:].min() == pytest.approx(math.log(V))


def test_settings_and_vocabularies_the_counts_cannot_take_are_errors():
    with pytest.raises(ValueError, match="sampled_orders"):
        Settings(**SETTINGS | {"sampled_orders": [4]})
    with pytest.raises(ValueError, match="icl_orders"):
        Settings(**SETTINGS | {"icl_orders": [3]})
    with pytest.raises(ValueError, match="lower max_order"):
        NgramTables.count(torch.zeros(1, 8, dtype=torch.long), torch.ones(1), 50_000, 5)


# ---- the sweep: tables from the run's own training stream -----------------------------------
def ngram_settings(**changes) -> dict:
    from conftest import probe_defaults

    return {"ngram": probe_defaults()["ngram"] | changes}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, train_debug):
    from test_text import TEXT, write_corpus

    root = tmp_path_factory.mktemp("ngram")
    write_corpus(root / "corpus.txt", n_docs=1000)
    return train_debug(root, *TEXT, f"data.files=[{root / 'corpus.txt'}]", "trainer.max_steps=80",
                       "optim.optimizer.lr=0.01"), root / "corpus.txt"


@pytest.fixture(scope="module")
def swept(text_run):
    from observatory.sweep import sweep

    run_dir, _ = text_run
    return sweep(run_dir.parent, ngram_settings(), progress=False)


@pytest.mark.slow  # trains a text run first (about 20 s in all): the default suite keeps to 5 minutes
def test_the_tables_count_every_token_training_read_and_live_with_the_observatory(text_run, swept):
    from observatory.sweep import sweep
    from observatory.sweep.ngram_tables import load_tables, table_path
    from train import rundir

    run_dir, _ = text_run
    assert swept.probed == len(rundir.read_manifest(run_dir)) and not swept.problems
    path = table_path(run_dir, 3)
    assert path.parent == run_dir.parent / "observatory" / "ngram" and not list(run_dir.rglob("*ngram*"))
    info = rundir.read_run_json(run_dir)
    tables = load_tables(run_dir, 3)
    # every block training read, as often as it read it: steps × blocks per step × block length
    assert tables.counts[1].sum() == info["max_steps"] * info["tokens_per_step"] / info["config"]["data"]["seq_len"] * (
        info["config"]["data"]["seq_len"] + 1)
    built = path.stat().st_mtime_ns
    sweep(run_dir.parent, ngram_settings(n_sampled=2), progress=False)  # another setting: the same stream's tables
    assert path.stat().st_mtime_ns == built


@pytest.mark.slow  # trains a text run first (about 20 s in all): the default suite keeps to 5 minutes
def test_a_trained_text_run_comes_within_half_of_its_start_to_the_bigram_statistics(swept):
    table = swept.table
    kl2 = table[table["metric"] == "kl/2"].set_index("step")["value"]
    assert kl2.min() <= 0.5 * kl2.loc[0], kl2.to_dict()
    assert {"icl_kl/1", "icl_kl/2", "loss_sampled/2"} <= set(table["metric"])


@pytest.mark.slow  # trains a text run first (about 20 s in all): the default suite keeps to 5 minutes
def test_a_stream_that_cannot_be_rebuilt_or_counted_is_an_error_before_any_work(text_run, tmp_path):
    import shutil

    from observatory.sweep import SweepError, sweep

    run_dir, corpus = text_run
    experiment = tmp_path / "copy"
    shutil.copytree(run_dir.parent, experiment, ignore=shutil.ignore_patterns("observatory"))
    with pytest.raises(SweepError, match="lower max_order"):
        sweep(experiment, ngram_settings(max_order=9, sampled_orders=[1]), progress=False)  # 300^9 keys
    with pytest.raises(SweepError, match="hold no context of 39 tokens"):
        sweep(experiment, ngram_settings(max_order=40, sampled_orders=[1]), progress=False)
    moved = corpus.rename(corpus.with_suffix(".moved"))
    try:
        with pytest.raises(SweepError, match=r"cannot be rebuilt .*restore the data it names, or leave the probe out"):
            sweep(experiment, ngram_settings(), progress=False)
    finally:
        moved.rename(corpus)
    assert not (experiment / "observatory" / "checkpoints").exists()  # nothing probed


# ---- the report: minima and the order of stages ---------------------------------------------
def statistics_results() -> pd.DataFrame:
    """One run: KL to the unigram lowest at step 100 then rising, to the bigram lowest at 400 then
    rising, to the trigram still falling at the end (3000); a previous-token head at ~600."""
    steps = [0, 10, 50, 100, 200, 400, 800, 1600, 3000]
    x = np.log10(np.array(steps) + 1)
    curves = {"kl/1": 1 + (x - x[3]) ** 2, "kl/2": 2 + (x - x[5]) ** 2, "kl/3": 4 - x}
    rows = [{"run": "2l-s0", "model": "2l", "seed": 0, "step": s, "probe": "ngram", "metric": m, "value": v,
             "stderr": 0.01, "label": f"KL to the {name} statistics", "role": "n-gram statistics"}
            for (m, values), name in zip(curves.items(), ("unigram", "bigram", "trigram"))
            for s, v in zip(steps, values)]
    return pd.DataFrame(rows)


def test_each_curves_minimum_is_found_with_the_checkpoints_either_side():
    from observatory.analysis.tables import ngram_minima

    minima = ngram_minima(statistics_results()).set_index("metric")
    assert minima.loc["kl/1", ["min_step", "low_step", "high_step"]].tolist() == [100, 50, 200]
    assert minima.loc["kl/2", "min_step"] == 400 and minima.loc["kl/2", "rises_after"]
    assert minima.loc["kl/3", "min_step"] == 3000 and not minima.loc["kl/3", "rises_after"]
    assert minima["falls_to_it"].all()


def test_the_headline_names_the_minima_and_the_order_of_the_stages():
    from observatory.analysis.tables import ngram_minima
    from observatory.report.findings import headline_text, statistics_findings

    by_size = pd.DataFrame([{"model": "2l", "n_params": 1000, "probe": "attention", "metric": "prev_token/max",
                             "role": "mechanism", "primary": True, "has_onset": True, "onset_step": 612.0,
                             "label": "previous-token-head score", "layer": None, "head": None, "split": None}])
    stages = pd.DataFrame([{"run": "2l-s0", "signal": "essential_dynamics", "boundary_step": 350.0, "low_step": 300.0,
                            "high_step": 400.0}])
    text = headline_text(statistics_findings(ngram_minima(statistics_results()), by_size, stages))
    assert text == [
        "In 2l the predictions came closest to the training stream's n-gram statistics: unigram at step 100, then "
        "moving away; bigram at step 400, then moving away; trigram still nearer at the end (step 3k).",
        "Stages in 2l: closest to the bigram statistics (step 400) → previous-token-head score (step 612); stage "
        "boundaries at 350 (essential_dynamics)."]
