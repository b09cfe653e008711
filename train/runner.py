"""One training run, from a composed config to a finished run directory."""

from __future__ import annotations

import logging
import signal
import sys
import time
import warnings
from pathlib import Path

import datasets
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from conf import own_keys
from train import rundir, wandb_run
from train.build import build, tokens_per_step
from train.checkpointing import Preempted, Preemption
from train.config import ConfigError, config_differences, package_versions, plain_config, validate
from train.durable import remove_temp_files, write_json
from train.module import NonFiniteLoss
from train.multirun import CoreShare, is_rank_zero, one_job_of_many, sharing_cores
from train.packing import DataError
from train.wandb_logger import WandbLogger

RESUMES = "run the same command to resume (from the last resume state; finished runs are kept)"


class Interrupted(SystemExit):
    """Ctrl-C stopped the run; the same command resumes it."""

    def __init__(self):
        super().__init__(wandb_run.INTERRUPTED)


def _quiet_libraries() -> None:
    """Lightning adds its own console handler; under Hydra, whose root handlers already print
    (and write train.log), every message would show twice. Lightning's info lines (which
    accelerators exist, a tip to install its cloud logger, why fit stopped) go: our own lines
    say what a run does; its warnings stay. Also hide a warning from inside Lightning that users
    cannot act on, and datasets' progress bars for sub-second steps."""
    datasets.disable_progress_bars()
    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run_training(cfg: DictConfig) -> Path:
    """Train (or resume, or recognise as finished) the run that `cfg` names. Keys that an
    experiment file sets for the observatory (probes, ...) are dropped first: they never
    reach the run record, the run's identity or the logger."""
    cfg = own_keys(cfg, "train")
    validate(cfg)
    run_dir, config = Path(cfg.run_dir), plain_config(cfg)
    if _already_completed(run_dir, config):
        return run_dir
    # a follower (python -m observatory follow=true) waits while the lock is held
    with rundir.training_lock(run_dir.parent), sharing_cores() as share:
        return _train(cfg, run_dir, config, share)


def _train(cfg: DictConfig, run_dir: Path, config: dict, share: CoreShare) -> Path:
    _quiet_libraries()
    try:
        training = build(cfg, share=share)
    except DataError as e:
        raise ConfigError(f"data: {e}") from None
    module, trainer, tokens = training.module, training.trainer, tokens_per_step(cfg)

    resume_path = run_dir / rundir.RESUME_STATE
    resuming = resume_path.exists()
    writer = is_rank_zero()  # the other ranks of a data-parallel run only train
    if writer:
        _write_run_record(cfg, config, run_dir, training.data.corpus, module.model, tokens)
        remove_temp_files(run_dir)  # left by a write that a kill interrupted
        print(f"{cfg.run_name}: {module.model.n_params():,} parameters ({module.model.n_params_non_embedding():,} "
              f"non-embedding), {tokens:,} tokens/step, {cfg.trainer.max_steps:,} steps"
              + (f" — resuming from {resume_path}" if resuming else ""), flush=True)

    for logger in trainer.loggers:
        logger.log_hyperparams(config)
    started, error = time.perf_counter(), None
    try:
        with one_job_of_many():
            trainer.fit(module, datamodule=training.data, ckpt_path=resume_path if resuming else None)
    except BaseException as e:
        error, preemption = e, training.preemption
        status = _failure_status(e, preemption)
        interrupted = not preemption.preempted and wandb_run.exit_code(e) == wandb_run.INTERRUPTED  # Ctrl-C
        if writer:
            rundir.update_status(run_dir, status)
            said = f"interrupted at step {trainer.global_step}; {RESUMES}" if interrupted else status
            print(f"{cfg.run_name}: {said}", file=sys.stderr, flush=True)
        if isinstance(e, SIGTERMException) and preemption.preempted:
            raise Preempted(*preemption.preempted) from None
        if interrupted:  # Lightning turned it into SystemExit(1): say so in the exit status, as a shell does
            raise Interrupted() from None
        raise
    finally:
        if isinstance(trainer.logger, WandbLogger):  # one W&B run per job, also between multirun jobs
            preempted = training.preemption.preempted
            trainer.logger.finish(128 + preempted[0] if preempted else wandb_run.exit_code(error))
    if writer:
        rundir.update_status(run_dir, "completed")
        manifest = rundir.read_manifest(run_dir)
        val_loss = f", final val loss {manifest[-1]['val_loss']:.4f}" if manifest else ""  # none under callbacks=none
        print(f"{cfg.run_name}: completed {cfg.trainer.max_steps:,} steps in {time.perf_counter() - started:.1f}s, "
              f"{len(manifest)} checkpoints{val_loss} -> {run_dir}")
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


def _write_run_record(cfg, config: dict, run_dir: Path, corpus, model, tokens: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus.tokenizer.save(str(run_dir / rundir.TOKENIZER))
    rundir.write_probe_items(run_dir, corpus.probe_items)
    write_json(run_dir / rundir.RUN_JSON, {
        "experiment": cfg.experiment_name, "run": cfg.run_name, "model": cfg.model.name, "seed": cfg.seed,
        "n_params": model.n_params(), "n_params_non_embedding": model.n_params_non_embedding(),
        "tokens_per_step": tokens, "max_steps": cfg.trainer.max_steps,
        "model_config": model.cfg.to_dict(), "config": config, "versions": package_versions(),
        "status": "running",
    })
