"""The LightningModule: next-token loss, AdamW with decay on matrices only, warmup + cosine."""

from __future__ import annotations

import math
import random
import time

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from train.model import GPT, IGNORE_INDEX, lm_loss
from train.model_config import GPTConfig


def warmup_cosine(warmup_steps: int, max_steps: int, min_lr_ratio: float):
    """LR multiplier: linear warmup to 1, then cosine decay to min_lr_ratio at max_steps."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def capture_rng_states() -> dict:
    """Every RNG a training step may touch, as plain containers and tensors (no pickle)."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# Dense bf16 tensor-core peak per GPU in FLOP/s (vendor datasheets), the denominator of MFU;
# the first name that occurs in torch.cuda.get_device_name() wins.
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
                   "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def peak_flops(device: torch.device) -> float | None:
    """The device's bf16 peak, or None where it is not a GPU in the table (no MFU logged)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; every earlier checkpoint is kept."""


class LitGPT(L.LightningModule):
    def __init__(self, model_config: dict, optim: dict, max_steps: int, tokens_per_step: int):
        super().__init__()
        self.save_hyperparameters()  # plain containers only: resume state loads with weights_only
        self.model = GPT(GPTConfig(**model_config))
        self.last_train_loss: torch.Tensor | None = None
        self._rng_to_restore: dict | None = None
        self._last_logged: tuple[float, int] | None = None  # (time, step) of the last throughput log
        self._peak_flops: float | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        tokens, labels = batch["input_ids"], batch["labels"]  # (B, T + 1) each
        loss = lm_loss(self.model(tokens[:, :-1]), labels[:, 1:])
        if not torch.isfinite(loss):  # stop before the optimizer writes NaN into the weights
            raise NonFiniteLoss(f"non-finite loss at step {self.global_step}")
        self.last_train_loss = loss.detach()
        return loss

    def on_fit_start(self) -> None:
        self._peak_flops = peak_flops(self.device)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step, every = self.trainer.global_step, self.trainer.log_every_n_steps
        if every == 0 or step % every:  # 0: never, as in Lightning
            return
        loss = self.last_train_loss
        if self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True, logger=False)
        if not self.loggers:
            return  # nothing would read the row: spare the .item() sync
        metrics = {"train/loss": loss.item(), "train/tokens": float(step * self.hparams.tokens_per_step),
                   "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
        # throughput over the whole interval since the last log: data loading, optimizer
        # steps and checkpoint writes included, as a user's wall clock sees them
        now = time.perf_counter()
        if self._last_logged is not None and step > self._last_logged[1]:
            then, then_step = self._last_logged
            metrics["train/tokens_per_s"] = (step - then_step) * self.hparams.tokens_per_step / (now - then)
            if self._peak_flops:  # model FLOPs utilization, per GPU
                achieved = metrics["train/tokens_per_s"] * self.model.palm_flops_per_token() / self.trainer.world_size
                metrics["train/mfu"] = achieved / self._peak_flops
        self._last_logged = (now, step)
        # One row straight to the loggers, as Lightning's LearningRateMonitor writes it: a self.log
        # call costs ~0.5 ms (5% of a 13k step), and its key is gathered again after every later
        # step. The row's step is the optimizer step that produced the weights it leads to, as the
        # manifest counts it (its train_loss at step N is this loss), so one step axis holds all.
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    @torch.no_grad()
    def heldout_losses(self, loaders: dict[str, DataLoader]) -> dict[str, float]:
        """Mean next-token loss on fixed held-out blocks (on their answers alone under
        answer-only loss): per task, and over all of them (target-weighted) under "all"."""
        was_training = self.training
        self.eval()
        sums, counts = {}, {}
        for name, loader in loaders.items():
            sums[name], counts[name] = 0.0, 0
            for batch in loader:
                tokens, targets = batch["input_ids"].to(self.device), batch["labels"][:, 1:].to(self.device)
                with self.trainer.precision_plugin.forward_context():
                    logits = self.model(tokens[:, :-1])
                sums[name] += lm_loss(logits, targets, reduction="sum").item()
                counts[name] += (targets != IGNORE_INDEX).sum().item()
        self.train(was_training)
        losses = {name: sums[name] / max(counts[name], 1) for name in loaders}
        return {"all": sum(sums.values()) / max(sum(counts.values()), 1), **losses}

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [  # nanoGPT: decay every matrix (incl. embeddings), never biases or norms
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.hparams.optim["weight_decay"]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optim = self.hparams.optim
        fused = {"fused": True} if optim.get("fused_on_gpu") and params[0].is_cuda else {}  # one kernel per step
        optimizer = instantiate(optim["optimizer"])(groups, **fused)  # a `_partial_: true` config
        multiplier = warmup_cosine(optim["warmup_steps"], self.hparams.max_steps, optim["min_lr_ratio"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- exact resume: Lightning checkpoints do not hold the global RNG states -------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:  # restore last, after data loaders are built
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
