"""Loss probes on the held-out examples packed as in training: loss per task, loss by
context position, and the in-context learning score (Olsson et al. 2022: loss at token 500
minus loss at token 50 of 512, here scaled to the context length)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from observatory.probes import probe


def icl_positions(n_positions: int) -> tuple[int, int]:
    """(early, late) loss positions at the fractions 50/512 and 500/512 of the context."""
    return round(n_positions * 50 / 512), min(n_positions - 1, round(n_positions * 500 / 512))


@probe("loss", inputs=("blocks",))
def loss(ctx, cfg) -> dict[str, float]:
    fwd = ctx.forward("blocks")
    tokens = fwd.tokens  # (M, T)
    per_token = F.cross_entropy(fwd.logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    per_token = per_token.view(tokens.shape[0], -1)  # (M, T - 1): loss at position t predicts token t + 1
    metrics = {"all": per_token.mean().item()}
    tasks = ctx.block_tasks
    for task in dict.fromkeys(tasks):
        rows = torch.tensor([i for i, t in enumerate(tasks) if t == task])
        metrics[f"task/{task}"] = per_token[rows].mean().item()
    by_position = per_token.mean(0)  # (T - 1,)
    n = by_position.shape[0]
    for pos in sorted({2**k for k in range(n.bit_length()) if 2**k < n} | {0, n - 1}):
        metrics[f"position/{pos}"] = by_position[pos].item()
    early, late = icl_positions(n)
    metrics["icl_score"] = (by_position[late] - by_position[early]).item()
    return metrics
