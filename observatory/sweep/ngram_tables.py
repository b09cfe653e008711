"""The n-gram tables of a run, counted on its own training stream: the training data rebuilt
from run.json's data config (train/data.py: build_corpus, the same code training ran), each
packed block counted as often as the run's step sampler reads it in max_steps steps. Built once
per training stream, before any checkpoint is probed, and cached with the observatory's outputs
(<experiment>/observatory/ngram/<key>.safetensors, the key a hash of what fixes the stream:
the data config, the sampler's seed, blocks per step and steps), never in the run directory. A
hub repository ships no training stream: the text its registration cut after the held-out
documents stands for it (hub.text: name a sample of the model's training data, e.g. TinyStories
for delphi-suite)."""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from tokenizers import Tokenizer

from observatory import store
from observatory.hub import source as hub_source
from observatory.probes.ngram import NgramTables, check_vocab
from train import rundir
from train.durable import atomic_write_bytes

FORMAT = 1  # bump when the counting changes: cached tables are rebuilt
NOT_THE_STREAM = ("cache_dir", "num_proc", "num_workers", "val_batches")  # data settings that change no training token


class StreamError(ValueError):
    """A run's training stream cannot be rebuilt; the message names the run and the fix."""


def table_path(run_dir: Path, max_order: int) -> Path:
    info = rundir.read_run_json(run_dir)
    if hub_source.is_hub_run(run_dir):  # the stream is hub.text's, cut at registration
        hub = hub_source.read_hub_json(run_dir)
        key = {"format": FORMAT, "hub": {k: hub[k] for k in ("repo", "text", "tokenizer", "n_ctx", "max_tokens",
                                                             "stream_tokens")}, "max_order": max_order}
    else:
        config = info["config"]
        data = {k: v for k, v in config["data"].items() if k not in NOT_THE_STREAM}
        key = {"format": FORMAT, "data": data, "seed": config["seed"], "tokens_per_step": info["tokens_per_step"],
               "max_steps": info["max_steps"], "max_order": max_order}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return store.output_dir(Path(run_dir).parent) / "ngram" / f"{digest}.safetensors"


def load_tables(run_dir: Path, max_order: int) -> NgramTables:
    return NgramTables.from_tensors(load_file(table_path(run_dir, max_order)))


def ensure_tables(run_dirs: list[Path], max_order: int) -> None:
    """Count the tables that are not cached yet (runs sharing a stream share them)."""
    for run_dir in run_dirs:
        path = table_path(run_dir, max_order)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:  # shards of a sweep: one counts, the others wait
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                tables = count_training_stream(run_dir, max_order)
                atomic_write_bytes(path, safetensors_bytes(tables.to_tensors()))


def count_training_stream(run_dir: Path, max_order: int) -> NgramTables:
    if hub_source.is_hub_run(run_dir):
        return count_hub_stream(run_dir, max_order)
    import datasets

    from train.data import StepBatchSampler, build_corpus  # training's own code: loaded only to count
    from train.packing import DataError

    datasets.disable_progress_bars()  # rebuilding a cached stream takes seconds: no bar per step of it

    info = rundir.read_run_json(run_dir)
    config = info["config"]
    if config["data"]["seq_len"] < max_order:
        raise StreamError(f"{Path(run_dir).name}: its blocks of {config['data']['seq_len'] + 1} tokens hold no context "
                          f"of {max_order - 1} tokens before a prediction; lower probes.ngram.max_order")
    run_vocab = Tokenizer.from_file(str(Path(run_dir) / rundir.TOKENIZER)).get_vocab()
    try:
        check_vocab(len(run_vocab), max_order)
    except ValueError as e:
        raise StreamError(f"{Path(run_dir).name}: {e}") from None
    try:
        corpus = build_corpus(OmegaConf.create(config["data"]))
    except (DataError, FileNotFoundError, OSError) as e:
        raise StreamError(f"{Path(run_dir).name}: its training stream cannot be rebuilt from run.json's data config "
                          f"({e}); restore the data it names, or leave the probe out with ~probes.ngram") from None
    if corpus.tokenizer.get_vocab() != run_vocab:
        raise StreamError(f"{Path(run_dir).name}: the rebuilt training data's tokenizer differs from the run's "
                          "tokenizer.json (the data changed since training); restore the data, or leave the probe out "
                          "with ~probes.ngram")
    blocks = corpus.train.with_format("torch")[:]["input_ids"]  # (M, seq_len + 1)
    per_step = info["tokens_per_step"] // config["data"]["seq_len"]
    reads = StepBatchSampler(len(blocks), per_step, config["seed"]).reads(info["max_steps"])
    return NgramTables.count(blocks, reads, len(run_vocab), max_order)


def count_hub_stream(run_dir: Path, max_order: int) -> NgramTables:
    """A hub model's stand-in for its training stream: hub.text after the held-out documents
    (observatory/hub/source.py: write_text), each block counted once, in the model's vocabulary."""
    blocks = hub_source.stream_blocks(run_dir)
    if blocks is None or not len(blocks):
        raise StreamError(f"{Path(run_dir).name}: hub.text has no tokens after the held-out ones to count n-grams on; "
                          "name more text, lower hub.max_tokens, or leave the probe out with ~probes.ngram")
    vocab_size = rundir.read_run_json(run_dir)["model_config"]["vocab_size"]
    try:
        check_vocab(vocab_size, max_order)
    except ValueError as e:
        raise StreamError(f"{Path(run_dir).name}: {e}") from None
    return NgramTables.count(blocks, torch.ones(len(blocks), dtype=torch.long), vocab_size, max_order)
