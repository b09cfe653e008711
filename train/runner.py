"""One training run, from a composed config to a finished run directory."""

from __future__ import annotations

import logging
import signal
import sys
import time
import warnings
from pathlib import Path

import datasets
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from train import rundir
from train.checkpointing import AtomicCheckpointIO, Preempted, Preemption, ScheduledCheckpoints, checkpoint_steps
from train.config import ConfigError, config_differences, package_versions, plain_config, validate
from train.data import BlocksDataModule, build_corpus
from train.durable import remove_temp_files, write_json
from train.module import LitGPT, NonFiniteLoss
from train.multirun import is_rank_zero, one_job_of_many
from train.packing import DataError


def _quiet_libraries() -> None:
    """Lightning adds its own console handler; under Hydra, whose root handlers already print
    (and write train.log), every message would show twice. Also hide a warning from inside
    Lightning that users cannot act on, and datasets' progress bars for sub-second steps."""
    datasets.disable_progress_bars()
    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run_training(cfg: DictConfig) -> Path:
    """Train (or resume, or recognise as finished) the run that `cfg` names."""
    validate(cfg)
    run_dir, config = Path(cfg.run_dir), plain_config(cfg)
    if _already_completed(run_dir, config):
        return run_dir
    _quiet_libraries()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        corpus = build_corpus(cfg.data)
    except DataError as e:
        raise ConfigError(f"data: {e}") from None
    data = BlocksDataModule(corpus, batch_size=cfg.data.batch_size, seed=cfg.seed,
                            val_batches=cfg.data.val_batches, num_workers=cfg.data.num_workers)
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * devices * cfg.trainer.accumulate_grad_batches
    model_config = dict(config["model"], vocab_size=corpus.tokenizer.get_vocab_size())
    module = LitGPT(model_config, config["optim"], cfg.trainer.max_steps, tokens_per_step)
    if cfg.compile:
        module.model.compile()  # in place: checkpoints keep the plain parameter names

    resume_path = run_dir / rundir.RESUME_STATE
    resuming = resume_path.exists()
    writer = is_rank_zero()  # the other ranks of a data-parallel run only train
    if writer:
        _write_run_record(cfg, config, run_dir, corpus, module.model, tokens_per_step)
        remove_temp_files(run_dir)  # left by a write that a kill interrupted
        print(f"{cfg.run_name}: {module.model.n_params():,} parameters ({module.model.n_params_non_embedding():,} "
              f"non-embedding), {tokens_per_step:,} tokens/step, {cfg.trainer.max_steps:,} steps"
              + (f" — resuming from {resume_path}" if resuming else ""), flush=True)

    trainer, logger, preemption = _trainer(cfg, config, run_dir, tokens_per_step)
    started = time.perf_counter()
    try:
        with one_job_of_many():
            trainer.fit(module, datamodule=data, ckpt_path=resume_path if resuming else None)
    except BaseException as e:
        status = _failure_status(e, preemption)
        if writer:
            rundir.update_status(run_dir, status)
            print(f"{cfg.run_name}: {status}", file=sys.stderr, flush=True)
        if isinstance(e, SIGTERMException) and preemption.preempted:
            raise Preempted(*preemption.preempted) from None
        raise
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()  # one W&B run per job, also between multirun jobs
    if writer:
        rundir.update_status(run_dir, "completed")
        manifest = rundir.read_manifest(run_dir)
        print(f"{cfg.run_name}: completed {cfg.trainer.max_steps:,} steps in {time.perf_counter() - started:.1f}s, "
              f"{len(manifest)} checkpoints, final val loss {manifest[-1]['val_loss']:.4f} -> {run_dir}")
    return run_dir


def _failure_status(e: BaseException, preemption: Preemption) -> str:
    """The status run.json records for a run that stopped early."""
    if preemption.preempted:
        signum, step = preemption.preempted
        return f"preempted at step {step} ({signal.Signals(signum).name}); resume state saved: run the same command"
    if isinstance(e, NonFiniteLoss):
        return f"failed: {e}"
    if isinstance(e, (KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into SystemExit(1)
        return "failed: interrupted"
    return f"failed: {type(e).__name__}: {e}".strip()


def _already_completed(run_dir: Path, config: dict) -> bool:
    """True for a finished run of the same config; an error for a run of another config,
    which is never overwritten."""
    if not (run_dir / rundir.RUN_JSON).exists():
        return False
    previous = rundir.read_run_json(run_dir)
    changed = config_differences(previous["config"], config)
    if changed:
        raise ConfigError(f"{run_dir} holds a run with a different config ({'; '.join(changed)}); "
                          "choose another experiment_name or seed, or delete that directory")
    if previous["status"] == "completed":
        print(f"{run_dir}: already completed ({len(rundir.read_manifest(run_dir))} checkpoints); nothing to do")
        return True
    return False


def _write_run_record(cfg, config: dict, run_dir: Path, corpus, model, tokens_per_step: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus.tokenizer.save(str(run_dir / rundir.TOKENIZER))
    rundir.write_probe_items(run_dir, corpus.probe_items)
    write_json(run_dir / rundir.RUN_JSON, {
        "experiment": cfg.experiment_name, "run": cfg.run_name, "model": cfg.model.name, "seed": cfg.seed,
        "n_params": model.n_params(), "n_params_non_embedding": model.n_params_non_embedding(),
        "tokens_per_step": tokens_per_step, "max_steps": cfg.trainer.max_steps,
        "model_config": model.cfg.to_dict(), "config": config, "versions": package_versions(),
        "status": "running",
    })


def _trainer(cfg, config: dict, run_dir: Path, tokens_per_step: int):
    steps = checkpoint_steps(cfg.trainer.max_steps, cfg.schedule.log2_max, cfg.schedule.every, cfg.schedule.extra)
    preemption = Preemption(run_dir)
    callbacks = [ScheduledCheckpoints(run_dir, steps, cfg.schedule.resume_every, tokens_per_step), preemption]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    progress_bar = cfg.trainer.enable_progress_bar
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # requeueing is submitit's job (hydra/launcher=slurm), not a second one
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, plugins=plugins,
        enable_progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
        max_epochs=-1, enable_checkpointing=False,
        use_distributed_sampler=False,  # the step sampler shards batches itself
    )
    if logger:
        logger.log_hyperparams(config)
    return trainer, logger, preemption
