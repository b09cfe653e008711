"""What the training benchmarks share: a composed config, the real module and data, and a
Lightning fit timed from the end of its warm-up steps."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.loggers import Logger
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from train.config import plain_config
from train.data import BlocksDataModule
from train.module import LitGPT
from train.packing import Corpus


def train_config(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["logger=none", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def make(cfg, corpus: Corpus, **optim) -> tuple[LitGPT, BlocksDataModule]:
    """The module and data module that `python -m train` builds, seeded the same way."""
    L.seed_everything(cfg.seed, verbose=False)
    data = BlocksDataModule(corpus, batch_size=cfg.data.batch_size, seed=cfg.seed, val_batches=1)
    config = plain_config(cfg)
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    vocab_size = corpus.tokenizer.get_vocab_size()
    module = LitGPT(config["model"] | {"vocab_size": vocab_size}, config["optim"] | optim, cfg.trainer.max_steps,
                    tokens_per_step)
    return module, data


class StepTimer(L.Callback):
    """Wall time from the start of batch `warmup` to the end of the last batch, with the
    device's queue drained at both ends."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.seconds = warmup, None, None

    def _sync(self, module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == trainer.max_steps:
            self._sync(pl_module)
            self.seconds = time.perf_counter() - self.started


class MetricRows(Logger):
    """A logger that keeps every row the module logs, in memory (to read back `train/mfu`)."""

    name, version = "metric_rows", 0

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # only the metrics are read back

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))


def fit_tokens_per_s(cfg, module, data, warmup: int, **trainer_kwargs) -> float:
    """Tokens/s of `trainer.fit` after `warmup` untimed steps (no checkpoints, no logger
    unless one is passed)."""
    timer = StepTimer(warmup)
    kwargs = dict(accelerator="cpu", devices=1, precision="32-true", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False,
                  log_every_n_steps=cfg.trainer.log_every_n_steps) | trainer_kwargs
    trainer = L.Trainer(max_steps=cfg.trainer.max_steps, max_epochs=-1, gradient_clip_val=cfg.trainer.gradient_clip_val,
                        callbacks=[timer], use_distributed_sampler=False, **kwargs)
    trainer.fit(module, datamodule=data)
    steps = cfg.trainer.max_steps - warmup
    return steps * cfg.data.batch_size * cfg.data.seq_len / timer.seconds


def interleaved(repeats: int, *measures) -> list[list]:
    """Each measure's results over `repeats` rounds, the order reversed every other round:
    in one process a later fit can run a few percent slower than an earlier one."""
    results = [[] for _ in measures]
    for repeat in range(repeats):
        order = list(enumerate(measures))
        for i, measure in order if repeat % 2 == 0 else reversed(order):
            results[i].append(measure())
    return results
