"""Capability probes: every task's held-out items, scored by a discontinuous metric (exact
match) and by continuous ones (answer log-probability, per-token accuracy, Brier score)."""

from __future__ import annotations

import torch

from observatory.probes import probe


@probe("capability", inputs=("items",), version=2)
def capability(ctx, cfg) -> dict[str, float]:
    """Held-out items as `<task>/<metric>`; items from the training part as `<task>/train_<metric>`."""
    items, metrics = ctx.items, {}
    for task, split in dict.fromkeys(zip(items.tasks, items.splits)):
        prefix = f"{task}/" if split == "heldout" else f"{task}/train_"
        metrics |= {prefix + k: v for k, v in _scores(ctx, *items.answer_tokens(task, split)).items()}
    return metrics


def _scores(ctx, rows, positions, targets) -> dict[str, float]:
    logprobs = ctx.forward("items").logprobs[rows, positions]  # (K answer tokens, V)
    target_logprob = logprobs.gather(1, targets[:, None]).squeeze(1)  # (K,)
    correct = (logprobs.argmax(-1) == targets).double()
    brier = 1 - 2 * target_logprob.exp() + (logprobs.exp() ** 2).sum(-1)  # sum_v (p_v - onehot_v)^2
    # per item: teacher-forced all-correct is exactly greedy decoding's exact match
    n = len(ctx.items.tasks)
    tokens_per_item = torch.bincount(rows, minlength=n).double()
    has_answer = tokens_per_item > 0
    correct_per_item = torch.bincount(rows, weights=correct, minlength=n)
    logprob_per_item = torch.bincount(rows, weights=target_logprob.double(), minlength=n)
    scores = {
        "exact_match": (correct_per_item == tokens_per_item)[has_answer].double().mean().item(),
        "token_accuracy": correct.mean().item(),
        "answer_logprob": (logprob_per_item / tokens_per_item)[has_answer].mean().item(),
        "brier": brier.double().mean().item(),
    }
    if all("wrong" in ctx.items.metadata[i] for i in rows.tolist()):
        scores["agreement"] = _agreement(ctx, rows, positions, targets)
    return scores


def _agreement(ctx, rows, positions, targets) -> float:
    """The right form outscores the wrong one at the first answer token (grammar)."""
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, positions, targets = rows[first], positions[first], targets[first]
    wrong = torch.tensor([ctx.token_ids[ctx.items.metadata[i]["wrong"]] for i in rows.tolist()])
    logits = ctx.forward("items").logits[rows, positions]
    right_score, wrong_score = logits.gather(1, targets[:, None]), logits.gather(1, wrong[:, None])
    return (right_score > wrong_score).double().mean().item()
