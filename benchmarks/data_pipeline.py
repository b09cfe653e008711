"""Does the data loader starve the model? Tokens/s of the real training loop fed by the
project's loader vs fed batches already sitting on the device, side by side in one run.

    python benchmarks/data_pipeline.py [--sizes 13k 340k] [--steps 300] [--repeats 4]
    python benchmarks/data_pipeline.py --accelerator gpu --precision bf16-mixed --sizes 98m --batch-size 512

Prints, per size, the median tokens/s of each over interleaved repeats and their ratio
(target >= 0.98), and the loader's own time per batch (no model) as a share of a step.
The first `--warmup` steps of every measurement are not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from common import fit_tokens_per_s, interleaved, train_config

from train.build import build, tokens_per_step
from train.data import InMemoryBlocks, StepBatchSampler, batch_loader, build_corpus


class BatchesInMemory(L.LightningDataModule):
    """The very batches the real loader yields (same blocks, same sampler), made beforehand
    and moved to the device."""

    def __init__(self, blocks: InMemoryBlocks, batch_size: int, seed: int, steps: int, device: torch.device):
        super().__init__()
        real = iter(batch_loader(blocks, StepBatchSampler(len(blocks), batch_size, seed)))
        self.batches = [{k: v.to(device) for k, v in next(real).items()} for _ in range(steps)]

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None)  # yields them as they are


def loader_seconds_per_batch(blocks: InMemoryBlocks, batch_size: int, seed: int, batches: int = 300) -> float:
    """The loader alone, with no model: what a training step waits for its batch."""
    loader = iter(batch_loader(blocks, StepBatchSampler(len(blocks), batch_size, seed)))
    next(loader)
    started = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return (time.perf_counter() - started) / batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["13k", "340k"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    print(f"torch {torch.__version__}, {args.accelerator}, {args.precision}, batch {args.batch_size}, "
          f"{args.steps} steps ({args.warmup} untimed), {args.repeats} interleaved repeats")
    print(f"{'size':>6} {'in memory tok/s':>16} {'loader tok/s':>13} {'ratio':>7} {'loader alone':>13} {'of a step':>10}")
    for size in args.sizes:
        cfg = train_config(f"model={size}", f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch_size}",
                           "data.train_examples=50000", f"trainer.accelerator={args.accelerator}",
                           f"trainer.precision={args.precision}")
        corpus = build_corpus(cfg.data)
        blocks = InMemoryBlocks(corpus.train)

        def in_memory_run():
            preloaded = BatchesInMemory(blocks, cfg.data.batch_size, cfg.seed, args.steps, device)
            return fit_tokens_per_s(cfg, build(cfg, corpus), args.warmup, data=preloaded)

        in_memory, loader = interleaved(args.repeats, in_memory_run,
                                        lambda: fit_tokens_per_s(cfg, build(cfg, corpus), args.warmup))
        m, l_ = statistics.median(in_memory), statistics.median(loader)
        alone = loader_seconds_per_batch(blocks, cfg.data.batch_size, cfg.seed)
        step = tokens_per_step(cfg) / l_
        print(f"{size:>6} {m:>16,.0f} {l_:>13,.0f} {l_ / m:>7.3f} {alone * 1e3:>10.3f} ms {alone / step:>10.2%}",
              flush=True)


if __name__ == "__main__":
    main()
