"""Capability probes: every task's held-out items, scored by a discontinuous metric (exact
match) and by continuous ones (answer log-probability, per-token accuracy, Brier score)."""

from __future__ import annotations

import torch

from observatory.probes import probe


@probe("capability", inputs=("items",), version=3)
def capability(ctx, cfg) -> dict[str, float]:
    """Held-out items as `<task>/<metric>`; items from the training part as `<task>/train_<metric>`.
    Each metric is the weighted mean of per-item scores, which are recorded for the
    item bootstrap of the emergence analysis."""
    items, metrics = ctx.items, {}
    for task, split in dict.fromkeys(zip(items.tasks, items.splits)):
        prefix = f"{task}/" if split == "heldout" else f"{task}/train_"
        for name, (rows, values, weights) in _item_scores(ctx, *items.answer_tokens(task, split)).items():
            metrics[prefix + name] = ctx.record_items(prefix + name, rows, values, weights)
    return metrics


def _item_scores(ctx, rows, positions, targets) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{metric: (item rows, per-item value, per-item weight)} for one task's answer tokens."""
    logprobs = ctx.forward("items").logprobs(rows, positions)  # (K answer tokens, V)
    target_logprob = logprobs.gather(1, targets[:, None]).squeeze(1).double()  # (K,)
    correct = (logprobs.argmax(-1) == targets).double()
    brier = (1 - 2 * target_logprob.exp() + (logprobs.double().exp() ** 2).sum(-1))  # sum_v (p_v - onehot_v)^2
    items, per_item = rows.unique_consecutive(return_inverse=True)  # answer tokens are grouped by item

    def item_sum(x):  # (K,) -> (I,)
        return torch.zeros(len(items), dtype=torch.double).index_add_(0, per_item, x)

    n_tokens, ones = item_sum(torch.ones_like(correct)), torch.ones(len(items), dtype=torch.double)
    n_correct = item_sum(correct)
    scores = {
        # teacher-forced all-correct is exactly greedy decoding's exact match
        "exact_match": (items, (n_correct == n_tokens).double(), ones),
        "token_accuracy": (items, n_correct / n_tokens, n_tokens),  # weighted by tokens: a mean over tokens
        "answer_logprob": (items, item_sum(target_logprob) / n_tokens, ones),
        "brier": (items, item_sum(brier) / n_tokens, n_tokens),
    }
    if all("wrong" in ctx.items.metadata[i] for i in items.tolist()):
        scores["agreement"] = (items, _agreement(ctx, rows, positions, targets), ones)
    return scores


def _agreement(ctx, rows, positions, targets) -> torch.Tensor:
    """Per item: the right form outscores the wrong one at the first answer token (grammar)."""
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, positions, targets = rows[first], positions[first], targets[first]
    wrong = torch.tensor([ctx.token_ids[ctx.items.metadata[i]["wrong"]] for i in rows.tolist()])
    logits = ctx.forward("items").logits[rows, positions]
    right_score, wrong_score = logits.gather(1, targets[:, None]), logits.gather(1, wrong[:, None])
    return (right_score > wrong_score).squeeze(1).double()
