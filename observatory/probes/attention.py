"""Attention-head probes on repeated random tokens [BOS] r_1..r_L r_1..r_L: for every head,
the induction score (mean attention from a token of the second copy to the token after its
first occurrence) and the previous-token score (mean attention to the previous position)."""

from __future__ import annotations

import torch

from observatory.probes import probe


def _pattern_hooks(model_cfg, cfg):
    return {"repeated": [f"blocks.{layer}.attn.hook_pattern" for layer in range(model_cfg.n_layer)]}


def head_scores(pattern: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pattern (S, H, T, T) over [BOS] + 2 copies of `half` tokens -> (induction, prev) per head (H,)."""
    T = pattern.shape[-1]
    queries = torch.arange(half + 1, 2 * half)  # second copy, tokens 1..L-1 (each has a successor)
    induction = pattern[:, :, queries, queries - half + 1].mean(dim=(0, 2))
    q = torch.arange(1, T)
    previous = pattern[:, :, q, q - 1].mean(dim=(0, 2))
    return induction, previous


@probe("attention", inputs=("repeated",), hooks=_pattern_hooks)
def attention(ctx, cfg) -> dict[str, float]:
    fwd = ctx.forward("repeated")
    half = (fwd.tokens.shape[1] - 1) // 2
    metrics = {}
    for name in sorted(fwd.cache):
        layer = int(name.split(".")[1])
        induction, previous = head_scores(fwd.cache[name].float(), half)
        for head in range(induction.shape[0]):
            metrics[f"induction/L{layer}H{head}"] = induction[head].item()
            metrics[f"prev_token/L{layer}H{head}"] = previous[head].item()
    metrics["induction/max"] = max(v for k, v in metrics.items() if k.startswith("induction/"))
    metrics["prev_token/max"] = max(v for k, v in metrics.items() if k.startswith("prev_token/"))
    return metrics
