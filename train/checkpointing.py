"""The checkpoint schedule, the callback that writes it, and atomic resume state."""

from __future__ import annotations

import io
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from train import rundir


def checkpoint_steps(max_steps: int, log2_max: int | None = None, every: int | None = None, extra=()) -> list[int]:
    """{0} ∪ powers of two up to log2_max ∪ multiples of `every` ∪ extra ∪ {max_steps}.

    Pythia: log2_max=512, every=1000, max_steps=143000 gives its 154 checkpoints."""
    bound = max_steps if log2_max is None else min(log2_max, max_steps)
    steps = {0, max_steps, *extra}
    steps.update(2**i for i in range(bound.bit_length()) if 2**i <= bound)
    if every:
        steps.update(range(every, max_steps + 1, every))
    return sorted(steps)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Resume state written next to its final path (temp file, fsync, os.replace), never
    through the system temp dir, and read back without unpickling arbitrary objects."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_bytes(Path(path), buffer.getvalue())

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return rundir.load_resume_state(path)


class ScheduledCheckpoints(L.Callback):
    """At each scheduled step: weights (safetensors) → manifest row → resume state, in that
    order, so a crash anywhere leaves every listed checkpoint durable and resumable."""

    def __init__(self, run_dir: Path, steps: list[int], resume_every: int, tokens_per_step: int):
        self.run_dir, self.steps, self.resume_every = Path(run_dir), set(steps), resume_every
        self.tokens_per_step = tokens_per_step
        self._written: set[int] = set()
        self._last_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            rundir.repair_manifest(self.run_dir)
        self._written = {row["step"] for row in rundir.read_manifest(self.run_dir)}
        self._last_step = trainer.global_step
        if trainer.global_step == 0 and 0 in self.steps:
            self._checkpoint(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:  # mid gradient accumulation: no optimizer step yet
            return
        self._last_step = step
        if step in self.steps:
            self._checkpoint(trainer, pl_module, step)
        if step in self.steps or step % self.resume_every == 0:
            trainer.save_checkpoint(self.run_dir / rundir.RESUME_STATE, weights_only=False)

    def _checkpoint(self, trainer, pl_module, step: int) -> None:
        if step in self._written:  # written before an interruption; resume is exact, so it is the same
            return
        losses = pl_module.heldout_losses(trainer.datamodule.heldout_dataloaders())
        val_loss = losses.pop("all")
        train_loss = None if step == 0 else pl_module.last_train_loss.item()
        metrics = {"val/loss": val_loss, **{f"val/loss/{task}": loss for task, loss in losses.items()}}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if trainer.is_global_zero:
            file = rundir.weights_file(step)
            sha256 = rundir.save_weights(self.run_dir / file, pl_module.model, step)
            rundir.append_manifest(self.run_dir, {
                "step": step, "tokens": step * self.tokens_per_step, "file": file, "sha256": sha256,
                "train_loss": train_loss, "val_loss": val_loss, "val_loss_by_task": losses, "wall_time": time.time(),
            })
        self._written.add(step)
