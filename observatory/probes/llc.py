"""The local learning coefficient (LLC) of each checkpoint, estimated with devinterp's SGLD
sampler (Lau et al. 2023), with the sampler's health beside every estimate.

SGLD samples weights w near the checkpoint w* from the tempered, localized posterior
exp(-nβ L(w) - γ/2 |w - w*|²), with L the training loss on fixed batches; the estimate is
nβ (E[L(w)] - L(w*)), per chain from the draws after burn-in, and its mean and standard
error over chains. devinterp runs the chains (`devinterp.slt.llc.llc`: its sampler, its
initial-loss pass, its per-step loss trace); this module chooses the data and the loss, and
reads the trace. devinterp 2.0.1's own `llc_mean` averages the trace over the burn-in steps
too; here burn-in is excluded, as in Lau et al.

The sampling data is the run's own training data, the same for every checkpoint: the
items of probe_items.jsonl with `split: "train"`, whole examples that the training stream
contained (train/data.py `trained_items`), packed per task into blocks of data.seq_len + 1
tokens as training cuts them (context.py `pack_with_loss_mask`), with the loss on the tokens
training took it on (every token, or with data.loss_on=answer the answers alone, scaled so
that a batch's mean is the mean over those tokens). The sampler cycles its batches in one
fixed order, so the draws are counted in whole passes over them.

Sampler health, per estimate: `drift`, how far the chains' mean loss still moves across the
draws (second half of the draws minus the first, as a share of the mean loss rise: near 0
when the chains have settled); `diverged`, the share of chains whose loss went non-finite
or ended (its mean over the last pass of the draws) more than `max_loss_rise` nats above the
checkpoint's; `negative`, the share of chains
whose estimate is below 0 (the sampler found lower loss: the checkpoint is not at a local
minimum of the sampling loss, or the step size is too large); `healthy` is 1 when no chain
diverged or went negative and |drift| <= `max_drift`, else 0. The report never draws an
unhealthy estimate as a point of the curve.

Per-component LLC (`components`: "L1H0", "L1", ... or "heads" / "layers" for all of them)
samples only that component's weights, the rest fixed at the checkpoint, through devinterp's
weight restrictions (`param_masks`: parameter name -> element mask). devinterp's own
restriction parser (`create_param_masks`) knows Hugging Face and TransformerLens layouts
only, so the masks for this model are built here, in its format.

devinterp (and through it `datasets` and `transformers`) is imported only when an estimate
runs: the observatory's other modules never load them.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from observatory.metrics import LLC_HEALTH, SAMPLER, STAGE_SIGNAL, Metric
from observatory.probes.registry import parse_settings, probe


@dataclass(frozen=True)
class Settings:
    """The sampler's settings: their values live in conf/probes/llc/ alone (calibrated per
    experiment with python -m observatory.calibrate; docs/devinterp.md)."""

    lr: float  # SGLD step size ε
    n_beta: float  # inverse temperature nβ
    localization: float  # γ: pull towards the checkpoint's weights
    chains: int
    draws: int  # SGLD steps counted in the estimate (whole passes over the batches)
    burnin: int  # steps before the draws (not counted)
    batch_size: int  # blocks per SGLD step
    seed: int
    max_blocks: int  # blocks of training data kept (evenly spaced over all tasks' blocks)
    components: list[str]  # per-component LLCs: "L1H0", "L1", "heads", "layers"
    max_drift: float  # |drift| above this: unhealthy
    max_loss_rise: float  # nats above the checkpoint's loss: the chain left the neighbourhood


def settings(cfg: dict) -> Settings:
    """The LLC settings of a probe config, checked: every one given, none unknown."""
    return parse_settings(Settings, dict(cfg), "probes.llc")


# ---- the sampling data and loss -----------------------------------------------------------
class Blocks(torch.utils.data.Dataset):
    """Token blocks (M, seq_len + 1) as the rows devinterp's sampler batches ({"input_ids": row})."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i]}


class TrainingLoss:
    """devinterp's `loss_fn(model, input_ids) -> (B, T)` per-token loss, for this model (which
    reads seq_len tokens, not the block's seq_len + 1) and for the training loss's mask: the
    sampler passes token rows only, so each row's mask is looked up by its tokens."""

    def __init__(self, blocks: torch.Tensor, loss_mask: torch.Tensor):
        self.full = bool(loss_mask.all())
        self.rows = {row.numpy().tobytes(): i for i, row in enumerate(blocks)}
        share = loss_mask.double().mean().item()
        self.weights = loss_mask.float() / max(share, 1e-12)  # a batch's mean = the mean over masked tokens

    def __call__(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none")
        loss = loss.view(input_ids.shape[0], -1)  # (B, T)
        if self.full:
            return loss
        rows = [self.rows[row.cpu().numpy().tobytes()] for row in input_ids]
        return loss * self.weights[rows].to(loss.device)


# ---- weight restrictions ------------------------------------------------------------------
def component_coordinates(component: str) -> tuple[int, int | None]:
    """A component as the settings name it ("L1H0", "L1") -> (layer, head or None)."""
    found = re.fullmatch(r"L(\d+)(?:H(\d+))?", component)
    if not found:
        raise ValueError(f"unknown component {component!r}: use L<layer> or L<layer>H<head>, 'layers' or 'heads'")
    return int(found[1]), (int(found[2]) if found[2] is not None else None)


def component_names(model_cfg, spec: list[str]) -> list[str]:
    """Expand "heads" / "layers" into L{i}H{j} / L{i}."""
    names = []
    for s in spec:
        if s == "heads":
            names += [f"L{i}H{j}" for i in range(model_cfg.n_layer) for j in range(model_cfg.n_head)]
        elif s == "layers":
            names += [f"L{i}" for i in range(model_cfg.n_layer)]
        else:
            names.append(s)
    return list(dict.fromkeys(names))


def param_masks(model, component: str) -> dict[str, torch.Tensor | None]:
    """devinterp ParamMasks for one component of train.model.GPT: "L{i}" (every weight of block
    i) or "L{i}H{j}" (head j of block i: its query, key and value rows of the fused qkv
    projection and their biases, and its columns of the output projection)."""
    cfg, params = model.cfg, dict(model.named_parameters())
    layer, head = component_coordinates(component)
    if layer >= cfg.n_layer or (head is not None and head >= cfg.n_head):
        raise ValueError(f"component {component!r} is outside the model ({cfg.n_layer} layers, {cfg.n_head} heads)")
    prefix = f"blocks.{layer}."
    if head is None:
        return {name: None for name in params if name.startswith(prefix)}
    d, hd = cfg.d_model, cfg.d_head
    rows = torch.zeros(3 * d, dtype=torch.bool)  # qkv output rows: Q | K | V, each (heads, d_head)
    rows.view(3, cfg.n_head, hd)[:, head] = True
    cols = torch.zeros(d, dtype=torch.bool)  # out projection input columns: (heads, d_head)
    cols.view(cfg.n_head, hd)[head] = True
    return {
        prefix + "attn.qkv.weight": rows[:, None].expand(3 * d, d).clone(),
        prefix + "attn.qkv.bias": rows.clone(),
        prefix + "attn.out.weight": cols[None, :].expand(d, d).clone(),
    }


# ---- one estimate ---------------------------------------------------------------------------
@dataclass
class Estimate:
    """One LLC estimate: per-chain values, the loss traces and the sampler's health."""

    trace: np.ndarray  # (chains, burnin + draws): mean sampling loss per SGLD step
    init_loss: float  # the checkpoint's loss over one pass of the sampler's batches
    burnin: int
    epoch: int  # batches per pass over the sampling data: the sampler cycles them in one fixed order
    n_beta: float
    max_drift: float
    max_loss_rise: float
    failures: list[str] = field(default_factory=list)  # devinterp's warnings of failed chains

    @property
    def draws(self) -> np.ndarray:
        """(chains, steps) after burn-in: whole passes over the batches where the draws hold
        one or more (each batch then weighs as much as in the initial loss), else all."""
        draws = self.trace[:, self.burnin:]
        whole = draws.shape[1] // self.epoch * self.epoch
        return draws[:, :whole] if whole else draws

    @property
    def per_chain(self) -> np.ndarray:
        """nβ (mean sampling loss after burn-in - the checkpoint's loss), per chain."""
        return self.n_beta * (self.draws.mean(1) - self.init_loss)

    @property
    def diverged(self) -> np.ndarray:
        """Per chain: a non-finite loss anywhere, or a mean loss over the last pass of the draws
        (the last `epoch` steps) more than max_loss_rise above the checkpoint's: the chain left
        and did not come back (a spike that recovers is not divergence)."""
        last = np.nan_to_num(self.draws[:, -self.epoch:], nan=np.inf).mean(1)
        return ~np.isfinite(self.trace).all(1) | (last > self.init_loss + self.max_loss_rise)

    @property
    def negative(self) -> np.ndarray:
        return np.isfinite(self.per_chain) & (self.per_chain < 0)

    @property
    def mean(self) -> float:
        ok = np.isfinite(self.per_chain)
        return float(self.per_chain[ok].mean()) if ok.any() else float("nan")

    @property
    def stderr(self) -> float:
        ok = self.per_chain[np.isfinite(self.per_chain)]
        return float(ok.std(ddof=1) / math.sqrt(len(ok))) if len(ok) > 1 else float("nan")

    @property
    def drift(self) -> float:
        """(mean loss over the second half of the draws - over the first half) / mean loss rise,
        on the chains that did not diverge."""
        keep = self.draws[~self.diverged]
        if not len(keep) or keep.shape[1] < 2:
            return float("nan")
        curve = keep.mean(0)
        passes = len(curve) // self.epoch
        if passes >= 2:  # compare whole passes, so that the batches' own losses cancel
            curve = curve[: passes * self.epoch].reshape(passes, self.epoch).mean(1)
        half = len(curve) // 2
        rise = curve.mean() - self.init_loss
        return float((curve[len(curve) - half:].mean() - curve[:half].mean()) / max(abs(rise), 1e-12))

    @property
    def healthy(self) -> bool:
        return bool(not self.diverged.any() and not self.negative.any() and np.isfinite(self.drift)
                    and abs(self.drift) <= self.max_drift)

    def metrics(self, component: str | None = None) -> dict[str, Metric]:
        """The estimate (`mean`), each chain's (`chain/<i>`) and the sampler's health, named
        `<component>/...` for a component's, and each carrying the component it is of."""
        prefix = f"{component}/" if component else ""
        where = dict(zip(("layer", "head"), component_coordinates(component))) if component else {}
        llc = dict(kind="score", low=None, high=None, label="LLC", **where)
        sampler = dict(role=SAMPLER, **where)
        share = dict(kind="score", higher_is_better=False, low=0.0, high=1.0, **sampler)
        out = {f"{prefix}mean": Metric(self.mean, stderr=self.stderr, role=STAGE_SIGNAL, primary=not component, **llc)}
        out |= {f"{prefix}chain/{i}": Metric(float(v), role=SAMPLER, sample=i, **llc) for i, v in enumerate(self.per_chain)}
        out[f"{prefix}drift"] = Metric(self.drift, kind="score", higher_is_better=False, label=LLC_HEALTH["drift"],
                                       unit="share of the loss rise", **sampler)
        out[f"{prefix}diverged"] = Metric(float(self.diverged.mean()), label=LLC_HEALTH["diverged"],
                                          unit="share of chains", **share)
        out[f"{prefix}negative"] = Metric(float(self.negative.mean()), label=LLC_HEALTH["negative"],
                                          unit="share of chains", **share)
        out[f"{prefix}healthy"] = Metric(float(self.healthy), kind="score", low=0.0, high=1.0,
                                         label=LLC_HEALTH["healthy"], **sampler)
        out[f"{prefix}init_loss"] = Metric(self.init_loss, kind="loss", higher_is_better=False, low=0.0,
                                           label=LLC_HEALTH["init_loss"], unit="nats per token", **sampler)
        return out


def estimate(model, blocks: torch.Tensor, loss_mask: torch.Tensor, s: Settings, component: str | None = None,
             loss_fn=None) -> Estimate:
    """The LLC of `model` (or of one component's weights, the rest held fixed) on the sampling
    `blocks` (M, seq_len + 1) with the training loss's `loss_mask` (M, seq_len), by devinterp.
    `loss_fn(model, blocks) -> (B, seq_len)` per-token losses replaces the training loss (tests)."""
    if len(blocks) > s.max_blocks:
        keep = torch.linspace(0, len(blocks) - 1, s.max_blocks).round().long()
        blocks, loss_mask = blocks[keep], loss_mask[keep]
    batch_size = min(s.batch_size, len(blocks))
    masks = param_masks(model, component) if component else None
    gc.freeze()  # devinterp collects garbage twice per chain: leave what is alive now out of every scan
    try:
        result, caught = _sample(model, blocks, loss_fn or TrainingLoss(blocks, loss_mask), s, masks, batch_size)
    finally:
        gc.unfreeze()
    trace = np.asarray(result["loss_trace"].values, dtype=float)  # (chains, steps)
    init_loss = float(result["init_loss"].values)
    failures = [str(w.message) for w in caught if "failed" in str(w.message).lower()]
    return Estimate(trace, init_loss, s.burnin, len(blocks) // batch_size, s.n_beta, s.max_drift,
                    s.max_loss_rise, failures)


def _sample(model, blocks, loss_fn, s: Settings, masks, batch_size: int):
    from devinterp.slt.llc import llc as devinterp_llc  # heavy (datasets, transformers): only here

    logging.getLogger("devinterp").setLevel(logging.WARNING)  # its INFO lines (zarr stores, thread pools), per estimate

    with tempfile.TemporaryDirectory(prefix="llc-") as tmp, warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stderr(io.StringIO()):  # devinterp's per-chain progress bars
        warnings.simplefilter("always")
        result = devinterp_llc(
            model, Blocks(blocks), {}, lr=s.lr, n_beta=s.n_beta, param_masks=masks,
            loss_fn=loss_fn, num_chains=s.chains, num_draws=s.draws,
            num_burnin_steps=s.burnin, batch_size=batch_size, localization=s.localization,
            num_init_loss_batches=max(1, len(blocks) // batch_size),  # one pass over the batches the chains cycle
            init_seed=s.seed, device=str(next(model.parameters()).device),
            output_path=Path(tmp) / "samples.zarr")
        result = result.load()  # read out of the temporary zarr store before it goes
    return result, caught


@probe("llc", version=2, settings=Settings)  # 2: max_blocks keeps evenly spaced blocks (was the first)
def llc(ctx, s: Settings) -> dict:
    """The whole model's LLC (`mean`, `chain/<i>`, health) and each configured component's
    (`<component>/mean`, ...), on the run's training-data blocks."""
    if ctx.train_blocks is None or not len(ctx.train_blocks):
        return {}  # no training-split items (e.g. a text run): nothing to sample on
    mask = ctx.loss_masks["train_blocks"]
    metrics = estimate(ctx.model, ctx.train_blocks, mask, s).metrics()
    for component in component_names(ctx.model.cfg, s.components):
        metrics |= estimate(ctx.model, ctx.train_blocks, mask, s, component).metrics(component)
    return metrics
