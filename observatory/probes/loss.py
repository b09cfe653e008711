"""Loss probes. On the held-out examples packed as in training: the loss per task and by
position in the block. On whole held-out examples that fill the context, each starting at
position 0 (so that position t has read t + 1 tokens, all of its own example): the in-context learning
score of Olsson et al. 2022, the loss at token 500 minus the loss at token 50 of 512, here
scaled to the context length. Runs whose examples are all shorter than the context (the
task suite's short tasks) get no ICL score: on them it would not measure context use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from observatory.metrics import LOSS_SPEC, MECHANISM, Metric, mean_with_error
from observatory.probes.registry import probe


def icl_positions(n_positions: int) -> tuple[int, int]:
    """(early, late) loss positions at the fractions 50/512 and 500/512 of the context."""
    return round(n_positions * 50 / 512), min(n_positions - 1, round(n_positions * 500 / 512))


def per_token_loss(fwd, targets: torch.Tensor) -> torch.Tensor:
    """(N, T): the loss at position t, which predicts targets[:, t] (the token after it)."""
    loss = F.cross_entropy(fwd.logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    return loss.view(targets.shape).double()


def icl_score(per_token: torch.Tensor) -> Metric:
    """Olsson et al.'s score over documents (D, T): per document, late minus early loss;
    negative when later tokens are predicted better, i.e. when the context is used."""
    early, late = icl_positions(per_token.shape[1])
    return mean_with_error((per_token[:, late] - per_token[:, early]).numpy(), kind="score", higher_is_better=False,
                           role=MECHANISM, label="in-context learning score", unit="nats, late − early token loss",
                           split="heldout", primary=True)


@probe("loss", version=5)  # 5: a text run's documents cut into windows of n_ctx + 1 (4: blocks of seq_len + 1)
def loss(ctx, settings) -> dict:
    metrics = _block_losses(ctx) if len(ctx.inputs.get("blocks", ())) else {}
    if len(ctx.inputs.get("documents", ())):
        metrics["icl_score"] = icl_score(per_token_loss(ctx.forward("documents"), ctx.targets["documents"]))
    return metrics


def _block_losses(ctx) -> dict:
    per_token = per_token_loss(ctx.forward("blocks"), ctx.targets["blocks"])  # (M, T)
    spec = LOSS_SPEC | dict(split="heldout")
    metrics = {"all": mean_with_error(per_token.mean(1).numpy(), label="held-out loss", primary=True, **spec)}
    tasks = ctx.block_tasks
    for task in dict.fromkeys(t for t in tasks if t is not None):  # None: a text run's documents, "all" already
        rows = torch.tensor([i for i, t in enumerate(tasks) if t == task])
        metrics[f"task/{task}"] = mean_with_error(per_token[rows].mean(1).numpy(), label="held-out loss", task=task,
                                                  **spec)
    n = per_token.shape[1]
    for pos in sorted({2**k for k in range(n.bit_length()) if 2**k < n} | {0, n - 1}):
        metrics[f"position/{pos}"] = mean_with_error(per_token[:, pos].numpy(), label=f"held-out loss at position {pos}",
                                                     **spec)
    return metrics
