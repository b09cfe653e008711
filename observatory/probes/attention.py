"""Attention-head probes: for every head, the induction score and the previous-token score.

Input: random tokens [BOS] filler r_1..r_L r_1..r_L filler (observatory/probes/context.py),
each sequence with its own repeat length L (every length from 3 to (n_ctx - 1) // 2, used
equally often) and its own split of the filler before and after the copies, so that every
sequence fills the context and the copies sit at varying positions.

Induction score: the mean attention from a token of the second copy to the position after its
one earlier occurrence (its twin in the first copy): where a head that matches content looks.
Tokens of the second copy that also occur elsewhere before are left out: the copies are
distinct tokens where the vocabulary holds them, and a repeat longer than the vocabulary has
recurring tokens, whose previous occurrence is not their twin (the chance below is computed on
the queries that remain, so it shows what that costs: with 8 tokens and n_ctx 128, chance 0.5).
Its chance is the score of the best head that does not read content: the larger of uniform
attention over the visible positions and the best fixed relative offset (a head that always
looks d back scores the share of queries whose target is d back). With one repeat length,
as in a context of 8 ([BOS] + 2 x 3 tokens), a head at a fixed offset of L - 1 scored 1; here
it scores chance exactly, and only a content-matching head scores 1. Repeats start at 3
tokens: a repeat of 2 puts the target one back, where a previous-token head attends, so that
from 3 on a perfect previous-token head scores 0 here and the two scores never credit the
same attention.

When it is reported: only where its chance is at most MAX_CHANCE (1/4; at most a quarter of a
content-matching head's score can come from position alone), which with K distinct repeat
lengths shared by S sequences is about ceil(S / K) / S: with S = 32, n_ctx >= 13 (lengths
3..6). With 32 sequences: n_ctx 8 (lengths 3 only) has chance 1 and no induction score;
n_ctx 32 0.094 (lengths 3..15), 64 0.0625 (3..31), 128 and 256 1/32 (one sequence per
length at most). And only in models of two layers or more: an induction head composes with a
previous-token head in an earlier layer, so a one-layer model cannot hold one, and no score
(or finding) may name one there. Where it is not reported the probe emits no induction metric.

Previous-token score: the mean attention to the previous position, over every position; its
chance is uniform attention (a head at the fixed offset 1 is a previous-token head)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from observatory.metrics import MECHANISM, Metric, mean_with_error
from observatory.probes.context import Repeats, repeat_layout
from observatory.probes.registry import probe
from train.hooks import act_name, hook_layer

SCORES = {"induction": ("induction score", "induction-head score"),  # (each head, the strongest head)
          "prev_token": ("previous-token score", "previous-token-head score")}
MAX_CHANCE = 0.25  # the induction score is reported only where its chance is at most this
MIN_LAYERS = 2  # ... and only in models with an earlier layer for an induction head to compose with

Positions = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (rows, queries, keys), each (K,): what a score reads


@dataclass(frozen=True)
class Settings:
    n_sequences: int  # repeated random sequences
    seed: int


def _pattern_hooks(model_cfg, cfg):
    return {"repeated": [act_name("pattern", layer) for layer in range(model_cfg.n_layer)]}


def induction_positions(tokens: torch.Tensor, repeats: Repeats) -> Positions:
    """tokens (S, T) laid out as `repeats` says -> every token of a second copy whose only
    earlier occurrence is its twin in the first copy, and the position after that twin."""
    S, T = tokens.shape
    pos = torch.arange(T)
    start, length = repeats.start[:, None], repeats.length[:, None]  # (S, 1)
    second = (pos >= start + length) & (pos < start + 2 * length)  # (S, T)
    twin = tokens.gather(1, (pos - length).clamp(min=0))  # (S, T): the token L back
    if not (twin == tokens)[second].all():
        raise ValueError("the repeated input does not follow repeat_layout(n_sequences, n_ctx, seed)")
    earlier = (tokens[:, :, None] == tokens[:, None, :]).tril(-1).sum(-1)  # (S, T): earlier occurrences
    rows, queries = (second & (earlier == 1)).nonzero(as_tuple=True)
    return rows, queries, queries - repeats.length[rows] + 1


def previous_positions(S: int, T: int) -> Positions:
    """Every position but the first, and the one before it."""
    queries = torch.arange(1, T).repeat(S)
    return torch.arange(S).repeat_interleave(T - 1), queries, queries - 1


def per_sequence(values: torch.Tensor, rows: torch.Tensor, S: int) -> torch.Tensor:
    """values (K, ...) of the queries of sequence rows (K,) -> their mean in each sequence that
    has any (S', ...): each sequence counts once, whatever its number of queries."""
    counts = torch.bincount(rows, minlength=S)
    sums = values.new_zeros((S, *values.shape[1:])).index_add_(0, rows, values)
    has = counts > 0
    return sums[has] / counts[has].view(-1, *[1] * (values.dim() - 1)).to(values.dtype)


def head_scores(pattern: torch.Tensor, positions: Positions) -> torch.Tensor:
    """pattern (S, H, T, T) -> the mean attention from each query to its key, per sequence
    (with a query) and head (S', H)."""
    rows, queries, keys = positions
    return per_sequence(pattern[rows, :, queries, keys], rows, pattern.shape[0])  # (K, H) before the mean


def uniform_score(positions: Positions, S: int) -> float:
    """The score of a head that attends uniformly to every visible position (query q sees q + 1)."""
    rows, queries, _ = positions
    return per_sequence(1.0 / (queries.double() + 1.0), rows, S).mean().item()


def fixed_offset_scores(positions: Positions, S: int, T: int) -> torch.Tensor:
    """(T,): the score of a head that always attends d positions back, for d = 0..T-1."""
    rows, queries, keys = positions
    at_offset = torch.nn.functional.one_hot(queries - keys, T).double()  # (K, T)
    return per_sequence(at_offset, rows, S).mean(0)


def induction_chance(positions: Positions, S: int, T: int) -> float:
    """The best score of a head that ignores content: uniform, or one fixed offset."""
    return max(uniform_score(positions, S), fixed_offset_scores(positions, S, T).max().item())


def scored(tokens: torch.Tensor, seed: int, n_layer: int) -> dict[str, tuple[Positions, float]]:
    """{score: (its positions, its chance)} for the scores reported on these tokens (S, T)."""
    S, T = tokens.shape
    out = {}
    induction = induction_positions(tokens, repeat_layout(S, T, seed))
    chance = induction_chance(induction, S, T) if len(induction[0]) else 1.0  # no query: nothing tells
    if chance <= MAX_CHANCE and n_layer >= MIN_LAYERS:
        out["induction"] = (induction, chance)
    previous = previous_positions(S, T)
    return out | {"prev_token": (previous, uniform_score(previous, S))}


@probe("attention", hooks=_pattern_hooks, version=3, settings=Settings)
def attention(ctx, settings: Settings) -> dict:
    fwd = ctx.forward("repeated", logits=False)
    scores = scored(fwd.tokens, settings.seed, ctx.model.cfg.n_layer)
    metrics: dict[str, Metric] = {}
    for name in sorted(fwd.cache):
        layer = hook_layer(name)
        for score, (positions, chance) in scores.items():
            values = head_scores(fwd.cache[name].float(), positions)  # (S', H)
            for head in range(values.shape[1]):
                metrics[f"{score}/L{layer}H{head}"] = mean_with_error(
                    values[:, head].double().numpy(), kind="score", low=0.0, high=1.0, chance=chance,
                    role=MECHANISM, label=SCORES[score][0], unit="attention weight", layer=layer, head=head)
    for score in scores:  # the strongest head, with its own sampling error
        best = max((m for m in metrics.values() if m.label == SCORES[score][0]), key=lambda m: m.value)
        metrics[f"{score}/max"] = replace(best, label=SCORES[score][1], layer=None, head=None, primary=True)
    return metrics
