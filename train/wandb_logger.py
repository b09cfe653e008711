"""Lightning's WandbLogger on the observatory's W&B conventions (train/wandb_run.py): the stable
run id and quiet settings shared with the observatory, every row at the optimizer step it
describes on the one train/step axis, and no step logged twice by a resumed run."""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from train import wandb_run


class WandbLogger(LightningWandbLogger):
    def __init__(self, experiment_name: str, run_name: str, save_dir: str, mode: str):
        kwargs = wandb_run.init_kwargs(experiment_name, "train", save_dir, mode, run=run_name)
        super().__init__(save_dir=kwargs.pop("dir"), **kwargs)
        self._wandb_init.pop("anonymous")  # Lightning passes None, and W&B warns that it has no effect
        self._step_run: wandb_run.StepRun | None = None

    def __getstate__(self) -> dict:  # pickled under ddp_spawn: a worker starts (resumes) the run anew
        return {**super().__getstate__(), "_step_run": None}

    @property
    @rank_zero_experiment
    def experiment(self):
        # Lightning's own would define its trainer/global_step axis; this one defines train/step
        if self._step_run is None:
            self._step_run = wandb_run.StepRun(self._wandb_init)
            self._experiment = self._step_run.run
        return self._step_run.run

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            raise ValueError("every W&B row needs the optimizer step it describes")
        self.experiment  # noqa: B018 (starts the run)
        self._step_run.log(dict(metrics), step)

    @rank_zero_only
    def finish(self, exit_code: int) -> None:
        """End the W&B run: 0 marks it finished, anything else failed (wandb_run.exit_code)."""
        if self._step_run is not None:
            self._step_run.finish(exit_code)
