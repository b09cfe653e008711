"""What the training benchmarks share: a composed config, the training `python -m train`
builds from it (train/build.py), and a fit timed from the end of its warm-up steps."""

from __future__ import annotations

import time

import lightning as L
import torch
from hydra import compose, initialize_config_module
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

from train.build import Training, tokens_per_step


def train_config(*overrides: str):
    """conf/train.yaml as the benchmarks run it: no logger, no progress bar and no checkpoints
    (callbacks=none) unless the overrides ask for them."""
    defaults = ["logger=none", "callbacks=none", "trainer.enable_progress_bar=false"]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*defaults, *overrides])
    OmegaConf.resolve(cfg)
    return cfg


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


def fit_tokens_per_s(cfg, training: Training, warmup: int, data: L.LightningDataModule | None = None) -> float:
    """Tokens/s of `trainer.fit` after `warmup` untimed steps, on the training's own data
    or on `data`."""
    timer = StepTimer(warmup)
    training.trainer.callbacks.append(timer)
    training.trainer.fit(training.module, datamodule=data or training.data)
    return (cfg.trainer.max_steps - warmup) * tokens_per_step(cfg) / timer.seconds


def interleaved(repeats: int, *measures) -> list[list]:
    """Each measure's results over `repeats` rounds, the order reversed every other round:
    in one process a later fit can run a few percent slower than an earlier one."""
    results = [[] for _ in measures]
    for repeat in range(repeats):
        order = list(enumerate(measures))
        for i, measure in order if repeat % 2 == 0 else reversed(order):
            results[i].append(measure())
    return results
