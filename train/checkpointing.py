"""The checkpoint schedule, the callback that writes it, and atomic resume state."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from train import rundir
from train.durable import atomic_write_bytes


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
        atomic_write_bytes(Path(path), buffer.getvalue())

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return rundir.load_resume_state(path)


def save_resume_state(trainer, run_dir: Path) -> None:
    """Everything an exact resume needs (a collective call: every rank makes it, rank 0 writes)."""
    trainer.save_checkpoint(Path(run_dir) / rundir.RESUME_STATE, weights_only=False)


class Preempted(SystemExit):
    """The run stopped on a preemption signal after saving its resume state."""

    def __init__(self, signum: int, step: int):
        super().__init__(128 + signum)  # the shell's convention for "ended by signal N"
        self.signum, self.step = signum, step


class Preemption(L.Callback):
    """SIGTERM, SIGUSR1 and SIGUSR2 (what SLURM and submitit send before a preemption or time
    limit) end the run after the current step (before the next one starts), with its resume
    state saved.

    SIGTERM is Lightning's: it raises SIGTERMException at the end of the step, and we save
    on that exception. SIGUSR1/2 are deferred the same way; after saving, the handler that
    was installed before ours runs (submitit's: it requeues the job and exits), else we stop."""

    DEFERRED = (signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.pending: int | None = None
        self.preempted: tuple[int, int] | None = None  # (signal, step) once state is saved
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        for signum in self.DEFERRED:
            self._previous[signum] = signal.signal(signum, self._defer)

    def _defer(self, signum, frame) -> None:
        self.pending = signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # acted on before the next step rather than at the end of this one: Lightning runs the
        # callbacks' batch-end hooks before the module's, which logs the finished step's row
        if self.pending is None:
            return
        signum, self.pending = self.pending, None
        save_resume_state(trainer, self.run_dir)
        self.preempted = (signum, trainer.global_step)
        previous = self._previous.get(signum)
        self._restore_handlers()
        if callable(previous):
            previous(signum, None)  # e.g. submitit: requeue, then exit with its own code
        raise Preempted(signum, trainer.global_step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, SIGTERMException):  # raised by Lightning at the end of a step
            save_resume_state(trainer, self.run_dir)
            self.preempted = (signal.SIGTERM, trainer.global_step)

    def teardown(self, trainer, pl_module, stage) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class CtrlCBetweenSteps(L.Callback):
    """Ctrl-C (SIGINT) stops the run before the next step starts, not inside the current one:
    a step's checkpoint, resume state and W&B rows are then all written. Inside a step, a
    Ctrl-C after the resume state but before the step's training row (the module logs after
    the callbacks) lost that row for good: the resumed run starts after that step. A second
    Ctrl-C interrupts at once; a Ctrl-C in the last step lets the run complete. Left alone
    where SIGINT is not Python's default handler (a background job ignores it; an embedding
    program may handle it)."""

    def __init__(self):
        self.pending = False
        self._previous = None

    def on_train_start(self, trainer, pl_module) -> None:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._defer)

    def _defer(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt  # Lightning's interrupt path, as an undeferred Ctrl-C takes

    def teardown(self, trainer, pl_module, stage) -> None:
        # Lightning ignores SIGINT while it shuts down after a Ctrl-C: leave that in place
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._defer:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None


class ScheduledCheckpoints(L.Callback):
    """At each step of checkpoint_steps(max_steps, log2_max, every, extra): weights
    (safetensors) → manifest row → resume state, in that order, so a crash anywhere leaves
    every listed checkpoint durable and resumable. Resume state also every `resume_every` steps.
    Configured by conf/callbacks/default.yaml from conf/schedule/."""

    def __init__(self, run_dir: Path, max_steps: int, resume_every: int, log2_max: int | None = None,
                 every: int | None = None, extra=()):
        self.run_dir, self.resume_every = Path(run_dir), resume_every
        self.steps = set(checkpoint_steps(max_steps, log2_max, every, extra))
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
            save_resume_state(trainer, self.run_dir)

    def _checkpoint(self, trainer, pl_module, step: int) -> None:
        if step in self._written:  # written before an interruption; resume is exact, so it is the same
            return
        losses = pl_module.heldout_losses(trainer.datamodule.heldout_dataloaders())
        val_loss = losses.pop("all")
        # the global batch's loss: every rank makes this collective call
        train_loss = None if step == 0 else trainer.strategy.reduce(pl_module.last_train_loss, reduce_op="mean").item()
        metrics = {"val/loss": val_loss, **{f"val/loss/{task}": loss for task, loss in losses.items()}}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if trainer.is_global_zero:
            file = rundir.weights_file(step)
            sha256 = rundir.save_weights(self.run_dir / file, pl_module.model, step)
            rundir.append_manifest(self.run_dir, {
                "step": step, "tokens": step * pl_module.hparams.tokens_per_step,  # as train/tokens counts
                "file": file, "sha256": sha256,
                "train_loss": train_loss, "val_loss": val_loss, "val_loss_by_task": losses, "wall_time": time.time(),
            })
        self._written.add(step)
