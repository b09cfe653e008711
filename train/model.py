"""The GPT family: one decoder, TransformerLens-style hook points.

Pre-LayerNorm blocks, causal attention through `scaled_dot_product_attention`, GELU MLP,
learned positions (in the residual stream as in GPT-2, or in the queries and keys alone:
`positions="qk"`), optional tied embeddings, an attention-only variant and, for grokking
studies, a variant without LayerNorm and a configurable initial weight scale. Every
intermediate activation passes through an identity `HookPoint` (train/hooks.py) named as in
TransformerLens (`blocks.0.attn.hook_pattern`, `blocks.1.hook_resid_post`, ...), so probes
written against one library read the other.

The config and the shape rule of the size family live in train/model_config.py (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.hooks import HookPoint
from train.model_config import GPTConfig


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z = HookPoint()

    def forward(self, x: torch.Tensor, qk_input: torch.Tensor | None = None,
                at: torch.Tensor | None = None) -> torch.Tensor:
        """x: the normalized residual (B, T, C); qk_input, where given, feeds the queries and
        keys instead of x (positions="qk": it holds the positions, the values never do); `at`,
        where given, the positions (Tq,) whose output alone is wanted: queries there alone,
        keys and values everywhere."""
        B, T, C = x.shape
        if at is not None:
            q, k, v = self._qkv_at(x, x if qk_input is None else qk_input, at)
        else:
            if qk_input is None:
                q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.d_head).unbind(dim=2)  # (B, T, H, D) each
            else:  # two products, not one concatenated: a copy along the last dim is slow on CPU
                w, b = self.qkv.weight, self.qkv.bias
                q, k = F.linear(qk_input, w[: 2 * C], b[: 2 * C]).view(B, T, 2, self.n_head, self.d_head).unbind(dim=2)
                v = F.linear(x, w[2 * C :], b[2 * C :]).view(B, T, self.n_head, self.d_head)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, Tq, D), (B, H, T, D), (B, H, T, D)
        if self.hook_pattern.active or self.hook_attn_scores.active:
            z = self._explicit_attention(q, k, v, at)  # someone wants the pattern: materialize it
        elif at is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # fused kernel
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, at, q.device))
        z = self.hook_z(z.transpose(1, 2))  # (B, Tq, H, D)
        return self.out(z.reshape(B, z.shape[1], C))

    def _qkv_at(self, x, qk_input, at):
        """Queries at the positions `at` alone, keys and values at every one: (B, Tq, H, D), (B, T, H, D) x 2."""
        B, T, C = x.shape
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(qk_input[:, at], w[:C], b[:C])
        k, v = F.linear(qk_input, w[C : 2 * C], b[C : 2 * C]), F.linear(x, w[2 * C :], b[2 * C :])
        return q.view(B, len(at), self.n_head, self.d_head), *(t.view(B, T, self.n_head, self.d_head) for t in (k, v))

    def _explicit_attention(self, q, k, v, at=None) -> torch.Tensor:
        T = k.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, H, Tq, T)
        scores = self.hook_attn_scores(scores.masked_fill(~causal_mask(T, at, q.device), float("-inf")))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, H, T_query, T_key)
        return pattern @ v  # (B, H, Tq, D)


def causal_mask(T: int, at: torch.Tensor | None, device) -> torch.Tensor:
    """(Tq, T): the query at position at[i] (every position when `at` is None) reads the keys
    at positions <= at[i]."""
    keys = torch.arange(T, device=device)
    return keys[None, :] <= (keys if at is None else at.to(device))[:, None]


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.fc_in(x))  # (B, T, d_mlp)
        return self.fc_out(self.hook_post(F.gelu(pre)))


def layer_norm(cfg: GPTConfig) -> nn.Module:
    return nn.LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()


class FinalLayerNorm(nn.LayerNorm):
    """The final LayerNorm, hooked as TransformerLens hooks a LayerNorm: `hook_normalized` holds
    (x - mean) / sqrt(var + eps), before the weight and bias are applied (B, T, C)."""

    def __init__(self, d_model: int):
        super().__init__(d_model)
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(F.layer_norm(x, self.normalized_shape, eps=self.eps)) * self.weight + self.bias


class NoFinalNorm(nn.Module):
    """Without LayerNorm (cfg.layer_norm false): `hook_normalized` holds the residual stream itself."""

    def __init__(self):
        super().__init__()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(x)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn_only = cfg.attn_only
        self.ln1 = layer_norm(cfg)
        self.attn = Attention(cfg)
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_resid_post = HookPoint()
        if not cfg.attn_only:
            self.ln2 = layer_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_resid_mid, self.hook_mlp_out = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor, qk_positions: torch.Tensor | None = None,
                at: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), or with `at` the positions at alone (B, Tq, C)."""
        x = self.hook_resid_pre(x)  # (B, T, C)
        qk_input = None if qk_positions is None else self.ln1(x + qk_positions)  # positions="qk"
        attn_out = self.hook_attn_out(self.attn(self.ln1(x), qk_input, at))
        x = (x if at is None else x[:, at]) + attn_out
        if not self.attn_only:
            x = self.hook_resid_mid(x)
            x = x + self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_final = FinalLayerNorm(cfg.d_model) if cfg.layer_norm else NoFinalNorm()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.out.weight") or name.endswith("fc_out.weight"):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))
        self.hook_points = {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}
        for name, hook in self.hook_points.items():
            hook.name = name

    def _init_weights(self, module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab); with `at`, sorted positions (Tq,), the logits
        there alone (B, Tq, vocab): the last block computes its queries and all after them at
        those positions only (as nanoGPT's generation takes the last position's logits alone;
        the LLC's sampler, for a loss on the answers alone)."""
        B, T = tokens.shape
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds the model's context n_ctx={self.cfg.n_ctx}")
        if at is not None and (at.dim() != 1 or at.is_floating_point() or at.dtype == torch.bool):
            raise ValueError(f"at= takes positions as a 1-D integer tensor, not {at.dtype} of shape {tuple(at.shape)}")
        positions = self.hook_pos_embed(self.wpe(torch.arange(T, device=tokens.device)))  # (T, C)
        x = self.hook_embed(self.wte(tokens))  # (B, T, C)
        if self.cfg.positions == "residual":
            x = x + positions
        qk_positions = positions if self.cfg.positions == "qk" else None
        for i, block in enumerate(self.blocks):
            x = block(x, qk_positions, at if i == len(self.blocks) - 1 else None)
        x = self.ln_final(x)
        return self.lm_head(x)  # (B, T, vocab)

    # ---- parameter counts -------------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def n_params_non_embedding(self) -> int:
        """Kaplan et al.: everything except token, position and unembedding matrices."""
        embedding = self.wte.weight.numel() + self.wpe.weight.numel()
        if not self.cfg.tied_embeddings:
            embedding += self.lm_head.weight.numel()
        return self.n_params() - embedding

    def palm_flops_per_token(self) -> float:
        """Training FLOPs per token, forward and backward (PaLM, appendix B): 6 per weight of
        every matrix multiply (non-embedding weights and the unembedding; embedding lookups
        cost none) plus 12·L·d·T for attention scores and their weighted sum. The MFU count;
        the observatory's `flops` column is the coarser 6·N·D."""
        cfg = self.cfg
        matmul_weights = self.n_params_non_embedding() + cfg.d_model * cfg.vocab_size
        return 6.0 * matmul_weights + 12.0 * cfg.n_layer * cfg.d_model * cfg.n_ctx

    # ---- hooks ------------------------------------------------------------------------
    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, Callable]]) -> Iterator[GPT]:
        """Attach `(hook_name, fn(tensor, hook) -> tensor | None)` pairs for the duration
        of the block; they are removed on exit, even when the block raises."""
        handles = []
        try:
            for name, fn in fwd_hooks:
                if name not in self.hook_points:
                    raise KeyError(f"no hook point named {name!r}")
                hook = self.hook_points[name]
                handles.append(hook.register_forward_hook(lambda mod, inp, out, fn=fn: fn(out, hook=mod)))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run_with_cache(
        self, tokens: torch.Tensor, names_filter: str | list[str] | Callable[[str], bool] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass that also returns the (detached) activations of the selected hooks."""
        if names_filter is None:
            names = list(self.hook_points)
        elif isinstance(names_filter, str):
            names = [names_filter]
        elif callable(names_filter):
            names = [name for name in self.hook_points if names_filter(name)]
        else:
            names = list(names_filter)  # unknown names raise in hooks()
        cache: dict[str, torch.Tensor] = {}

        def save(tensor, hook):
            cache[hook.name] = tensor.detach()

        with self.hooks([(name, save) for name in names]):
            logits = self(tokens)
        return logits, cache


IGNORE_INDEX = -100  # a target that no loss is taken on (PyTorch's and Hugging Face's convention)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross entropy over the targets that are not IGNORE_INDEX; logits (B, T, V),
    targets (B, T). The mean of a batch without any target is 0, not NaN."""
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return total
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)
