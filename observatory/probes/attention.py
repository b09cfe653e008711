"""Attention-head probes on repeated random tokens [BOS] r_1..r_L r_1..r_L: for every head,
the induction score (mean attention from a token of the second copy to the token after its
first occurrence) and the previous-token score (mean attention to the previous position).
Chance is the score of uniform attention over the visible positions."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from observatory.metrics import MECHANISM, Metric, mean_with_error
from observatory.probes.registry import probe
from train.hooks import act_name, hook_layer

SCORES = {"induction": ("induction score", "induction-head score"),  # (each head, the strongest head)
          "prev_token": ("previous-token score", "previous-token-head score")}


@dataclass(frozen=True)
class Settings:
    n_sequences: int  # repeated random sequences
    seed: int


def _pattern_hooks(model_cfg, cfg):
    return {"repeated": [act_name("pattern", layer) for layer in range(model_cfg.n_layer)]}


def _positions(T: int, half: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((queries, keys) of the induction score, (queries, keys) of the previous-token score)."""
    queries = torch.arange(half + 1, 2 * half)  # second copy, tokens 1..L-1 (each has a successor)
    q = torch.arange(1, T)
    return (queries, queries - half + 1), (q, q - 1)


def head_scores(pattern: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pattern (S, H, T, T) over [BOS] + 2 copies of `half` tokens -> per sequence and head
    (S, H): the induction score and the previous-token score."""
    (iq, ik), (pq, pk) = _positions(pattern.shape[-1], half)
    return pattern[:, :, iq, ik].mean(-1), pattern[:, :, pq, pk].mean(-1)


def uniform_scores(T: int, half: int) -> tuple[float, float]:
    """The two scores of a head that attends uniformly to every visible position (query q sees q + 1)."""
    (iq, _), (pq, _) = _positions(T, half)
    return (1.0 / (iq + 1.0)).mean().item(), (1.0 / (pq + 1.0)).mean().item()


@probe("attention", hooks=_pattern_hooks, version=2, settings=Settings)
def attention(ctx, settings: Settings) -> dict:
    fwd = ctx.forward("repeated")
    T = fwd.tokens.shape[1]
    half = (T - 1) // 2
    chance = dict(zip(("induction", "prev_token"), uniform_scores(T, half)))
    metrics: dict[str, Metric] = {}
    for name in sorted(fwd.cache):
        layer = hook_layer(name)
        for score, per_sequence in zip(("induction", "prev_token"), head_scores(fwd.cache[name].float(), half)):
            for head in range(per_sequence.shape[1]):
                metrics[f"{score}/L{layer}H{head}"] = mean_with_error(
                    per_sequence[:, head].double().numpy(), kind="score", low=0.0, high=1.0, chance=chance[score],
                    role=MECHANISM, label=SCORES[score][0], unit="attention weight", layer=layer, head=head)
    for score, (each, strongest) in SCORES.items():  # the strongest head, with its own sampling error
        best = max((m for m in metrics.values() if m.label == each), key=lambda m: m.value)
        metrics[f"{score}/max"] = replace(best, label=strongest, layer=None, head=None, primary=True)
    return metrics
