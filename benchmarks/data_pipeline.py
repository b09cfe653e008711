"""Does the data loader starve the model? Tokens/s of the real training loop fed by the
project's loader vs fed batches already sitting on the device, side by side in one run.

    python benchmarks/data_pipeline.py [--sizes 13k 340k] [--steps 300] [--repeats 3]
    python benchmarks/data_pipeline.py --accelerator gpu --precision bf16-mixed --sizes 98m --batch-size 512

Prints, per size, the median tokens/s of each over interleaved repeats and their ratio
(target >= 0.98). The first `--warmup` steps of every measurement are not timed.
"""

from __future__ import annotations

import argparse
import statistics

import lightning as L
import torch

from common import fit_tokens_per_s, make, train_config
from train.data import InMemoryBlocks, StepBatchSampler, build_corpus


class BatchesInMemory(L.LightningDataModule):
    """The very batches the real loader yields (same blocks, same sampler), made beforehand
    and moved to the device."""

    def __init__(self, blocks: InMemoryBlocks, batch_size: int, seed: int, steps: int, device: torch.device):
        super().__init__()
        sampler = iter(StepBatchSampler(len(blocks), batch_size, seed))
        self.batches = [{k: v.to(device) for k, v in blocks[next(sampler)].items()} for _ in range(steps)]

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None)  # yields them as they are


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["13k", "340k"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    print(f"torch {torch.__version__}, {args.accelerator}, {args.precision}, batch {args.batch_size}, "
          f"{args.steps} steps ({args.warmup} untimed), {args.repeats} interleaved repeats")
    print(f"{'size':>6} {'in memory tok/s':>16} {'loader tok/s':>13} {'ratio':>7}")
    trainer_kwargs = dict(accelerator=args.accelerator, precision=args.precision)
    for size in args.sizes:
        cfg = train_config(f"model={size}", f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch_size}",
                           "data.train_examples=50000")
        corpus = build_corpus(cfg.data)
        blocks = InMemoryBlocks(corpus.train)
        loader, in_memory = [], []
        for _ in range(args.repeats):
            module, _ = make(cfg, corpus)
            preloaded = BatchesInMemory(blocks, cfg.data.batch_size, cfg.seed, args.steps, device)
            in_memory.append(fit_tokens_per_s(cfg, module, preloaded, args.warmup, **trainer_kwargs)[0])
            loader.append(fit_tokens_per_s(cfg, *make(cfg, corpus), args.warmup, **trainer_kwargs)[0])
        m, l_ = statistics.median(in_memory), statistics.median(loader)
        print(f"{size:>6} {m:>16,.0f} {l_:>13,.0f} {l_ / m:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
