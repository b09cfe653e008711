"""Tokens/s of the Lightning training loop vs a bare PyTorch loop: same model, optimizer,
LR schedule, gradient clipping and batches, measured side by side in one process.

    python benchmarks/train_loop_overhead.py [--sizes 13k 100k 340k] [--steps 300] [--repeats 3]

Prints, per size, the median tokens/s of each loop over interleaved repeats and their ratio
(target >= 0.90). The first `--warmup` steps of every measurement are not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from train.config import plain_config
from train.data import BlocksDataModule, Corpus, StepBatchSampler, build_corpus
from train.model import lm_loss
from train.module import LitGPT


class StepTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.started = warmup, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.started = time.perf_counter()


def make(cfg, corpus: Corpus) -> tuple[LitGPT, BlocksDataModule]:
    L.seed_everything(cfg.seed, verbose=False)
    data = BlocksDataModule(corpus, batch_size=cfg.data.batch_size, seed=cfg.seed, val_batches=1)
    config = plain_config(cfg)
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    vocab_size = corpus.tokenizer.get_vocab_size()
    module = LitGPT(config["model"] | {"vocab_size": vocab_size}, config["optim"], cfg.trainer.max_steps, tokens_per_step)
    return module, data


def lightning_tokens_per_s(cfg, corpus: Corpus, steps: int, warmup: int) -> float:
    module, data = make(cfg, corpus)
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, logger=False,
                        gradient_clip_val=cfg.trainer.gradient_clip_val, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        use_distributed_sampler=False, log_every_n_steps=cfg.trainer.log_every_n_steps)
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - timer.started
    return (steps - warmup) * cfg.data.batch_size * cfg.data.seq_len / seconds


def bare_tokens_per_s(cfg, corpus: Corpus, steps: int, warmup: int) -> float:
    module, data = make(cfg, corpus)
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    model = module.model.train()
    sampler = StepBatchSampler(len(corpus.train), cfg.data.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(corpus.train, batch_sampler=sampler)
    started = None
    for step, batch in zip(range(steps), loader):
        if step == warmup:
            started = time.perf_counter()
        tokens = batch["input_ids"]
        loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return (steps - warmup) * cfg.data.batch_size * cfg.data.seq_len / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["13k", "100k", "340k"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps "
          f"({args.warmup} untimed), {args.repeats} interleaved repeats")
    print(f"{'size':>6} {'bare tok/s':>12} {'lightning tok/s':>16} {'ratio':>7}")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        for size in args.sizes:
            cfg = compose(config_name="train", overrides=[f"model={size}", f"trainer.max_steps={args.steps}"])
            OmegaConf.resolve(cfg)
            corpus = build_corpus(cfg.data)
            bare, lit = [], []
            for _ in range(args.repeats):
                bare.append(bare_tokens_per_s(cfg, corpus, args.steps, args.warmup))
                lit.append(lightning_tokens_per_s(cfg, corpus, args.steps, args.warmup))
            b, l_ = statistics.median(bare), statistics.median(lit)
            print(f"{size:>6} {b:>12,.0f} {l_:>16,.0f} {l_ / b:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
