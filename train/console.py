"""What training prints while it runs, where no progress bar shows."""

from __future__ import annotations

import lightning as L

from train.progress import Progress


class ProgressLines(L.Callback):
    """A line every so often (train/progress.py) when the progress bar is off (output not a
    terminal): '13k-s0: 1,200/2,000 steps (60%), 45.3 steps/s, ETA 18s, loss 2.4131'."""

    def __init__(self, run_name: str):
        self.run_name = run_name
        self.progress: Progress | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.progress = Progress(trainer.max_steps, done=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero or not self.progress.due():
            return
        loss = pl_module.last_train_loss  # read (a device sync) only when a line is due
        loss = f", loss {loss.item():.4f}" if loss is not None else ""
        print(f"{self.run_name}: {self.progress.line(trainer.global_step, 'steps')}{loss}", flush=True)
