"""The ngram probe's cost per checkpoint against the other default probes together (target:
at most 1x, so that it can be on by default), on a text run (the bundled King James Bible,
4096-token BPE) and a task-suite run; and what counting the training stream's tables once per
run costs. Trains its own small runs in a temp dir first.

    python -m benchmarks.ngram_cost [--model 100k] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from benchmarks.probe_sweep import default_probes
from observatory.sweep import RunInputs, probe_checkpoint
from observatory.sweep.ngram_tables import count_training_stream
from train import rundir
from train.runner import run_training


def train(root: Path, model: str, data: str) -> Path:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"checkpoints_dir={root}", f"experiment_name={data}", f"model={model}", f"data={data}",
            "trainer.max_steps=20", "schedule.every=20", "logger=none", f"data.cache_dir={root / 'cache'}"])
    return run_training(cfg)


def seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def compare(run_dir: Path, repeats: int) -> None:
    probes = default_probes()
    others = {name: cfg for name, cfg in probes.items() if name != "ngram"}
    model = rundir.load_model(run_dir, rundir.read_manifest(run_dir)[-1]["step"])
    t = time.perf_counter()
    tables = count_training_stream(run_dir, probes["ngram"]["max_order"])
    counted = time.perf_counter() - t
    with_ngram, without = RunInputs.load(run_dir, probes), RunInputs.load(run_dir, others)
    all_probes = seconds(lambda: probe_checkpoint(model, with_ngram, probes), repeats)
    other_probes = seconds(lambda: probe_checkpoint(model, without, others), repeats)
    ngram = all_probes - other_probes  # its own work plus the forward passes only it asks for
    entries = sum(len(c) for c in tables.counts.values())
    print(f"{run_dir.parent.name}: vocabulary {tables.vocab_size}, {entries:,} n-gram entries (orders 1-"
          f"{tables.max_order}), counted in {counted:.1f} s once per run; per checkpoint: other default probes "
          f"{other_probes * 1000:.0f} ms, ngram {ngram * 1000:.0f} ms, ratio {ngram / other_probes:.2f} (target <= 1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="100k")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
        for data in ("kjv", "suite"):
            compare(train(Path(tmp), args.model, data), args.repeats)


if __name__ == "__main__":
    main()
