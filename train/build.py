"""From a composed config to what trains: the LightningModule, its data and the Trainer, as
`python -m train` builds them (train/runner.py adds the run directory around them). The
benchmarks build theirs here too, so they measure the same objects."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment

from train.checkpointing import AtomicCheckpointIO, CtrlCBetweenSteps, Preemption
from train.config import plain_config
from train.console import ProgressLines
from train.data import BlocksDataModule, build_corpus
from train.module import LitGPT
from train.packing import Corpus


@dataclass
class Training:
    module: LitGPT
    data: BlocksDataModule
    trainer: L.Trainer
    preemption: Preemption  # asked after a stop whether a signal stopped the run


def tokens_per_step(cfg) -> int:
    """Tokens one optimizer step trains on: batch_size (per device) × seq_len × devices ×
    accumulate_grad_batches. A device count Lightning picks itself ("auto", a list) counts as 1."""
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    return cfg.data.batch_size * cfg.data.seq_len * devices * cfg.trainer.accumulate_grad_batches


class ShareCores(L.Callback):
    """Every `every` steps, this job takes its current share of the cores (train/multirun.py:
    CoreShare): more threads when the jobs beside it have finished."""

    def __init__(self, share, every: int = 20):
        self.share, self.every = share, every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.share.update()


def build(cfg, corpus: Corpus | None = None, share=None) -> Training:
    """Seeds, then builds the corpus (or takes one already built from cfg.data), the module and
    the Trainer, in the order that fixes the initial weights. `share`: the job's CoreShare."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    corpus = corpus or build_corpus(cfg.data)
    data = BlocksDataModule(corpus, batch_size=cfg.data.batch_size, seed=cfg.seed,
                            val_batches=cfg.data.val_batches, num_workers=cfg.data.num_workers)
    model_config = dict(plain_config(cfg.model), vocab_size=corpus.tokenizer.get_vocab_size())
    module = LitGPT(model_config, plain_config(cfg.optim), cfg.trainer.max_steps, tokens_per_step(cfg))
    if cfg.compile:
        module.model.compile()  # in place: checkpoints keep the plain parameter names
    # the config's callbacks first: a checkpoint due at a step is written before a preemption stops there
    preemption = Preemption(cfg.run_dir)
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]
    callbacks += [preemption, CtrlCBetweenSteps()] + ([ShareCores(share)] if share else [])
    return Training(module, data, _trainer(cfg, callbacks), preemption)


def _trainer(cfg, callbacks: list[L.Callback]) -> L.Trainer:
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # requeueing is submitit's job (hydra/launcher=slurm), not a second one
        plugins.append(SLURMEnvironment(auto_requeue=False))
    progress_bar = sys.stderr.isatty() if cfg.trainer.enable_progress_bar is None else cfg.trainer.enable_progress_bar
    if not progress_bar:  # a plain line every so often instead
        callbacks = [*callbacks, ProgressLines(cfg.run_name)]
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, plugins=plugins,
        enable_progress_bar=progress_bar,
        max_epochs=-1, enable_checkpointing=False,
        use_distributed_sampler=False,  # the step sampler shards batches itself
    )
