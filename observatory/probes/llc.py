"""The local learning coefficient (LLC) of each checkpoint, estimated with devinterp's SGLD
sampler (Lau et al. 2023), with the sampler's health beside every estimate.

SGLD samples weights w near the checkpoint w* from the tempered, localized posterior
exp(-nβ L(w) - γ/2 |w - w*|²), with L the training loss on fixed batches; the estimate is
nβ (E[L(w)] - L(w*)), per chain from the draws after burn-in, and its mean and standard
error over chains. The chains are devinterp's (`devinterp.slt.llc.llc` with its default
SGMCMC.sgld: its batch order, initial-loss pass, update, noise and per-chain seeds), advanced
here together on the model's device: every chain on the same batch at each step, as in
devinterp, the chain-stacked weights updated at once, without devinterp's per-step
bookkeeping. On an accelerator the model is evaluated once per step on the stacked weights
(torch.func.vmap); on CPU chain after chain, which is faster there. On the same weights and
data the chains follow devinterp's to float rounding (tests/test_devinterp.py), and
`estimate(..., sampler="devinterp")` runs devinterp's own `llc` instead. Where the loss is
taken at a few positions (grokking's answers), the chains ask our GPT for those positions'
logits alone (`GPT.forward(tokens, at=...)`): the same loss, less arithmetic. devinterp 2.0.1's
own `llc_mean` averages the trace over the burn-in steps too; here burn-in is excluded, as
in Lau et al.

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
samples only that component's weights, the rest fixed at the checkpoint, through weight
restrictions in devinterp's format (`param_masks`: parameter name -> element mask).
devinterp's own restriction parser (`create_param_masks`) knows Hugging Face and
TransformerLens layouts only, so the masks for this model are built here.

devinterp (and through it `datasets` and `transformers`) is imported only when its sampler
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
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from observatory.metrics import LLC_HEALTH, SAMPLER, STAGE_SIGNAL, Metric
from observatory.probes.registry import parse_settings, probe
from train.model import GPT


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
def token_loss(model, input_ids: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """devinterp's `loss_fn(model, input_ids) -> (B, T)` per-token loss, for this model, which
    reads seq_len tokens, not the block's seq_len + 1. With `at` (our GPT's sorted positions)
    the model computes those positions' logits alone, and the loss elsewhere is 0 (where the
    whole pass gives a non-finite loss outside `at`, devinterp's weighted loss is NaN there and
    ends the chain; this one does not see it)."""
    inputs, targets = input_ids[:, :-1], input_ids[:, 1:]
    if at is None:
        logits = model(inputs)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)
    logits = model(inputs, at=at)  # (B, Tq, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets[:, at].flatten(), reduction="none")
    return loss.new_zeros(targets.shape).index_copy(1, at, loss.view(len(targets), -1))  # (B, T)


def loss_positions(model, loss_mask: torch.Tensor) -> torch.Tensor | None:
    """The positions at which any block takes its loss, where our GPT can compute them alone
    and they are at most half of all (a loss on the answers alone: grokking's one token in
    seven); else None, the whole pass (its fused causal attention beats a masked one)."""
    at = loss_mask.any(0).nonzero().flatten()
    if not isinstance(model, GPT) or len(at) > loss_mask.shape[1] // 2:
        return None
    return at.to(next(model.parameters()).device)


def loss_weights(loss_mask: torch.Tensor) -> torch.Tensor:
    """Per-token weights (M, T) of the training loss: its mask, scaled so that a batch's mean
    loss is the mean over the masked tokens."""
    return loss_mask.float() / max(loss_mask.double().mean().item(), 1e-12)


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
    failures: list[str] = field(default_factory=list)  # the sampler's messages of failed chains

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
             loss_fn=None, sampler: str | None = None) -> Estimate:
    """The LLC of `model` (or of one component's weights, the rest held fixed) on the sampling
    `blocks` (M, seq_len + 1) with the training loss's `loss_mask` (M, seq_len). `loss_fn(model,
    blocks) -> (B, seq_len)` per-token losses replaces the cross-entropy (tests); by default
    the chains here compute logits only where a loss is taken (token_loss's `at`: the same
    function, less arithmetic), devinterp's sampler the whole forward pass. `sampler`:
    "vmap" or "chainwise" (the chains advanced together, here), "devinterp" (its `llc`, chain
    after chain: the reference that tests hold the others to); by default "vmap" for our GPT on
    an accelerator, where one call for all chains saves kernel launches, and "chainwise" on CPU,
    where the matrix products dominate and vmap's batched products are slower (docs/devinterp.md),
    and for a hub model (its logits at a 50k vocabulary, every chain's at once, and
    transformers' code under vmap: untested)."""
    keep = kept_blocks(len(blocks), s.max_blocks)
    blocks, loss_mask = blocks[keep], loss_mask[keep]
    batch_size = min(s.batch_size, len(blocks))
    masks = param_masks(model, component) if component else dict.fromkeys(n for n, _ in model.named_parameters())
    on_cpu = next(model.parameters()).device.type == "cpu"
    sampler = sampler or ("chainwise" if on_cpu or not isinstance(model, GPT) else "vmap")
    if loss_fn is None:  # devinterp's own sampler on the whole forward pass: the reference as it is
        loss_fn = token_loss if sampler == "devinterp" else partial(token_loss, at=loss_positions(model, loss_mask))
    args = model, blocks, loss_weights(loss_mask), loss_fn, s, masks, batch_size
    if sampler == "devinterp":
        trace, init_loss, failures = sample_devinterp(*args)
    elif sampler in ("vmap", "chainwise"):
        trace, init_loss, failures = sample_batched(*args, vmap=sampler == "vmap")
    else:
        raise ValueError(f"unknown LLC sampler {sampler!r}: vmap, chainwise or devinterp")
    return Estimate(trace, init_loss, s.burnin, len(blocks) // batch_size, s.n_beta, s.max_drift,
                    s.max_loss_rise, failures)


def kept_blocks(n_blocks: int, max_blocks: int) -> torch.Tensor:
    """The blocks the sampler keeps: at most max_blocks, evenly spaced over all of them."""
    if n_blocks <= max_blocks:
        return torch.arange(n_blocks)
    return torch.linspace(0, n_blocks - 1, max_blocks).round().long()


# ---- the chains advanced together -----------------------------------------------------------
def batch_order(n_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """The blocks (epoch, batch_size) of each batch of one pass, in devinterp's order: its
    DataLoader, shuffled by a generator seeded with the sampler's seed (the same for every
    chain), the last partial batch dropped; the chains cycle this one pass."""
    loader = torch.utils.data.DataLoader(range(n_blocks), batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    return torch.stack(list(loader))


class LossOf(torch.nn.Module):
    """loss_fn(model, ids) as a module's forward, so that functional_call can put a chain's
    weights into the model whatever the loss reads of it."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, ids)


def sample_batched(model, blocks, weights, loss_fn, s: Settings, masks: dict, batch_size: int, vmap: bool):
    """devinterp's SGLD chains (`llc` with SGMCMC.sgld: its batch order, initial loss, update,
    noise and seeds) advanced together: each step evaluates every chain on the same batch, as
    in devinterp, and updates the chain-stacked weights at once. `vmap`: the model evaluated
    once on the stacked weights (torch.func.vmap), else chain after chain within the step.
    Returns the loss trace (chains, steps), the initial loss and the failed chains' messages."""
    device = next(model.parameters()).device
    order = batch_order(len(blocks), batch_size, s.seed).to(device)
    blocks, weights = blocks.to(device), weights.to(device)
    with torch.no_grad():  # the checkpoint's loss over one pass of the batches
        init_loss = torch.stack([(loss_fn(model, blocks[rows]) * weights[rows]).float().mean() for rows in order]).mean()
    params = dict(model.named_parameters())
    center = {n: params[n].detach() for n in masks}
    w = {n: c.expand(s.chains, *c.shape).clone().requires_grad_() for n, c in center.items()}  # (chains, *shape)
    keep = {n: m.to(device, torch.float32) for n, m in masks.items() if m is not None}
    noise = [torch.Generator(device).manual_seed(s.seed + c) for c in range(s.chains)]  # devinterp's seed per chain
    step_of = losses_and_gradients(model, loss_fn, {n: p.detach() for n, p in params.items() if n not in masks}, vmap)
    trace = torch.full((s.chains, s.burnin + s.draws), math.nan, device=device)
    alive = torch.ones(s.chains, dtype=torch.bool, device=device)
    for i in range(s.burnin + s.draws):
        rows = order[i % len(order)]
        loss, grads = step_of(w, blocks[rows], weights[rows])  # (chains,), per weight (chains, *shape)
        alive &= loss.isfinite()  # devinterp ends a chain at its first non-finite loss
        trace[:, i] = torch.where(alive, loss.detach(), math.nan)
        sgld_step(w, grads, center, keep, noise, s)
    failures = [f"Chain {c} failed: Loss is NaN or Inf" for c in torch.nonzero(~alive).flatten().tolist()]
    return trace.cpu().double().numpy(), float(init_loss), failures


def losses_and_gradients(model, loss_fn, fixed: dict, vmap: bool):
    """(w, ids, token_weights) -> (every chain's mean loss (chains,), its gradient per sampled
    weight (chains, *shape), None for a weight the loss does not read): each chain's weights
    taken from the chain-stacked `w`, the others `fixed`. By vmap all chains in one evaluation;
    else chain after chain, each chain's graph freed before the next (at a 50k vocabulary one
    chain's logits and their log-softmax take gigabytes)."""
    module, fixed = LossOf(model, loss_fn), {"model." + n: t for n, t in fixed.items()}

    def one(w, ids):
        return torch.func.functional_call(module, ({"model." + n: t for n, t in w.items()}, fixed), (ids,))

    if vmap:
        batched = torch.func.vmap(one, in_dims=(0, None))

        def together(w, ids, token_weights):
            with warnings.catch_warnings():  # CPU attention has no batching rule: vmap loops over the chains there
                warnings.filterwarnings("ignore", message="There is a performance drop")
                loss = (batched(w, ids) * token_weights).float().mean((1, 2))
            return loss, torch.autograd.grad(loss.sum(), list(w.values()), allow_unused=True)  # chain c's reads w[c]
        return together

    def chain_after_chain(w, ids, token_weights):
        losses, grads = [], []
        for c in range(len(next(iter(w.values())))):
            mine = {n: t[c] for n, t in w.items()}  # views of the stacked weights: their gradients are chain c's
            loss = (one(mine, ids) * token_weights).float().mean()
            grads.append(torch.autograd.grad(loss, list(mine.values()), allow_unused=True))
            losses.append(loss.detach())
        return torch.stack(losses), [None if g[0] is None else torch.stack(g) for g in zip(*grads)]
    return chain_after_chain


@torch.no_grad()
def sgld_step(w: dict, grads, center: dict, keep: dict, noise: list, s: Settings):
    """devinterp's SGMCMC.sgld step on every chain: w -= ε/2 (nβ ∇L + γ (w - w*)), then
    w += √ε N(0, 1), both restricted to the sampled elements (`keep`); each chain's noise drawn
    weight by weight from its own generator, as devinterp draws it from the global generator
    seeded with seed + chain."""
    for (name, p), g in zip(w.items(), grads):
        if g is None:  # devinterp skips a weight without a gradient, its noise too
            continue
        drift = g * s.n_beta
        if s.localization:
            drift += s.localization * (p - center[name])
        z = torch.empty_like(p)
        for c, gen in enumerate(noise):
            z[c].normal_(generator=gen)
        if name in keep:
            drift *= keep[name]
            z *= keep[name]
        p.add_(drift, alpha=-0.5 * s.lr)
        p.add_(z, alpha=s.lr**0.5)


# ---- devinterp's sampler, the reference -------------------------------------------------------
class Blocks(torch.utils.data.Dataset):
    """Token blocks (M, seq_len + 1) as the rows devinterp's sampler batches ({"input_ids": row})."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i]}


class RowWeightedLoss:
    """loss_fn times the per-token weights, as devinterp's `loss_fn(model, input_ids)`: it
    passes token rows alone, so each row's weights are looked up by its tokens."""

    def __init__(self, loss_fn, blocks: torch.Tensor, weights: torch.Tensor):
        self.loss_fn, self.weights = loss_fn, weights
        self.full = bool((weights == 1).all())
        self.rows = {row.numpy().tobytes(): i for i, row in enumerate(blocks)}

    def __call__(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(model, input_ids)
        if self.full:
            return loss
        rows = [self.rows[row.cpu().numpy().tobytes()] for row in input_ids]
        return loss * self.weights[rows].to(loss.device)


def sample_devinterp(model, blocks, weights, loss_fn, s: Settings, masks: dict, batch_size: int):
    """The chains by devinterp's `llc`, one after another: the loss trace, the initial loss
    and devinterp's warnings of failed chains."""
    from devinterp.slt.llc import llc as devinterp_llc  # heavy (datasets, transformers): only here

    logging.getLogger("devinterp").setLevel(logging.WARNING)  # its INFO lines (zarr stores, thread pools), per estimate
    gc.freeze()  # devinterp collects garbage twice per chain: leave what is alive now out of every scan
    with tempfile.TemporaryDirectory(prefix="llc-") as tmp, warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stderr(io.StringIO()):  # devinterp's per-chain progress bars
        warnings.simplefilter("always")
        try:
            result = devinterp_llc(
                model, Blocks(blocks), {}, lr=s.lr, n_beta=s.n_beta, param_masks=masks,
                loss_fn=RowWeightedLoss(loss_fn, blocks, weights), num_chains=s.chains, num_draws=s.draws,
                num_burnin_steps=s.burnin, batch_size=batch_size, localization=s.localization,
                num_init_loss_batches=max(1, len(blocks) // batch_size),  # one pass over the batches the chains cycle
                init_seed=s.seed, device=str(next(model.parameters()).device),
                output_path=Path(tmp) / "samples.zarr")
            trace = np.asarray(result["loss_trace"].values, dtype=float)  # read before the store goes
            init_loss = float(result["init_loss"].values)
        finally:
            gc.unfreeze()
    return trace, init_loss, [str(w.message) for w in caught if "failed" in str(w.message).lower()]


def sampled_model(model) -> torch.nn.Module:
    """The module whose weights the sampler moves: our GPT itself; a hub checkpoint's Hugging
    Face model as transformers builds it (observatory/hub/model.py: sampling_model)."""
    return model.sampling_model() if hasattr(model, "sampling_model") else model


@probe("llc", version=3, settings=Settings)  # 3: logits where the loss is taken alone; 2: evenly spaced blocks
def llc(ctx, s: Settings) -> dict:
    """The whole model's LLC (`mean`, `chain/<i>`, health) and each configured component's
    (`<component>/mean`, ...), on the run's training data (sweep/runner.py: sampling_data)."""
    blocks = ctx.sampling_blocks
    if blocks is None or not len(blocks):
        return {}  # no training-split items (e.g. our own text runs): nothing to sample on
    mask, model = ctx.loss_masks["sampling_blocks"], sampled_model(ctx.model)
    metrics = estimate(model, blocks, mask, s).metrics()
    for component in component_names(ctx.model.cfg, s.components):
        metrics |= estimate(model, blocks, mask, s, component).metrics(component)
    return metrics
