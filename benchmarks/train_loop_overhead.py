"""Tokens/s of the Lightning training loop vs a bare PyTorch loop: same model, optimizer,
LR schedule, gradient clipping and batches, measured side by side in one process.

    python benchmarks/train_loop_overhead.py [--sizes 13k 100k 340k] [--steps 300] [--repeats 4]

Prints, per size, the median tokens/s of each loop over interleaved repeats and their ratio
(target >= 0.95). The first `--warmup` steps of every measurement are not timed. A third
column runs the same module under `Trainer(barebones=True)`, every Trainer feature off
(logging included): the floor of Lightning's own per-step bookkeeping.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import fit_tokens_per_s, interleaved, train_config

from train.build import build, tokens_per_step
from train.data import InMemoryBlocks, StepBatchSampler, batch_loader, build_corpus
from train.model import lm_loss
from train.packing import Corpus


def bare_tokens_per_s(cfg, corpus: Corpus, steps: int, warmup: int) -> float:
    module = build(cfg, corpus).module
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    model = module.model.train()
    blocks = InMemoryBlocks(corpus.train)
    loader = batch_loader(blocks, StepBatchSampler(len(blocks), cfg.data.batch_size, cfg.seed))
    started = None
    for step, batch in zip(range(steps), loader):
        if step == warmup:
            started = time.perf_counter()
        tokens = batch["input_ids"]
        loss = lm_loss(model(tokens[:, :-1]), batch["labels"][:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return (steps - warmup) * tokens_per_step(cfg) / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["13k", "100k", "340k"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps "
          f"({args.warmup} untimed), {args.repeats} interleaved repeats")
    print(f"{'size':>6} {'bare tok/s':>12} {'lightning tok/s':>16} {'ratio':>7} {'barebones tok/s':>16} {'ratio':>7}")
    for size in args.sizes:
        cfg = train_config(f"model={size}", f"trainer.max_steps={args.steps}")
        barebones = train_config(f"model={size}", f"trainer.max_steps={args.steps}", "+trainer.barebones=true",
                                 "trainer.log_every_n_steps=0")
        corpus = build_corpus(cfg.data)
        measured = interleaved(
            args.repeats, lambda: bare_tokens_per_s(cfg, corpus, args.steps, args.warmup),
            lambda: fit_tokens_per_s(cfg, build(cfg, corpus), args.warmup),
            lambda: fit_tokens_per_s(barebones, build(barebones, corpus), args.warmup))
        bare, lit, barebones = map(statistics.median, measured)
        print(f"{size:>6} {bare:>12,.0f} {lit:>16,.0f} {lit / bare:>7.3f} {barebones:>16,.0f} {barebones / bare:>7.3f}",
              flush=True)


if __name__ == "__main__":
    main()
