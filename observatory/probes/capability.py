"""Capability probes: every task's held-out items, scored by a discontinuous metric (exact
match) and by continuous ones (answer log-probability, per-token accuracy, Brier score, and
the token edit distance of the greedy answer, Schaeffer et al. 2023's continuous metric).

Every metric is reachable: a model that always answers right scores the top of each. Items
whose answer is one of several equally right continuations (the grammar task's verb: its
lemma is drawn independently of the prompt) are scored by the choice they test alone:
the right form against the wrong one (`agreement`, and the continuous `agreement_prob`)."""

from __future__ import annotations

import torch
from rapidfuzz.distance import Levenshtein

from observatory.metrics import ACCURACY, ALL_OR_NOTHING, CONTINUOUS
from observatory.probes.registry import probe

# Each metric's spec and identity. The mirage question (Schaeffer et al. 2023) sets a task's
# all-or-nothing score of the answer against its continuous ones; the primary ones stand for
# the task in the emergence map.
SPECS = {
    "exact_match": ACCURACY | dict(role=ALL_OR_NOTHING, label="exact match", unit="fraction of items", primary=True),
    "token_accuracy": ACCURACY | dict(role=CONTINUOUS, label="token accuracy", unit="fraction of tokens", primary=True),
    "answer_logprob": dict(kind="logprob", low=None, high=0.0, role=CONTINUOUS, label="answer log-probability",
                           unit="nats"),
    "brier": dict(kind="score", higher_is_better=False, low=0.0, high=2.0, role=CONTINUOUS, label="Brier score",
                  unit="0–2, lower is better"),
    "edit_distance": dict(kind="score", higher_is_better=False, low=0.0, high=1.0, role=CONTINUOUS,
                          label="token edit distance", unit="edits per token, lower is better"),
    "agreement": ACCURACY | dict(chance=0.5, role=ALL_OR_NOTHING, label="agreement", unit="fraction of items",
                                 primary=True),
    # not primary: a choice task's one continuous metric stands for it anyway (analysis/tables.py: tasks), and the
    # adaptive sweep refines the primary curves alone (marked primary, its extra checkpoints made the adaptive sweep
    # lose dyck's exact-match onset on the dense test run: tests/test_observatory.py)
    "agreement_prob": dict(kind="score", low=0.0, high=1.0, chance=0.5, role=CONTINUOUS, label="agreement probability",
                           unit="probability"),
}


@probe("capability", version=5)
def capability(ctx, settings) -> dict:
    """Held-out items as `<task>/<metric>`; items from the training stream as `<task>/train_<metric>`
    (all but the token edit distance: the greedy decoding it needs costs up to one forward pass
    per answer token, and the mirage question asks it of held-out items alone). Each metric is
    the weighted mean of per-item scores, which are recorded for the item bootstrap of the
    emergence analysis."""
    items, metrics = ctx.items, {}
    for task, split in dict.fromkeys(zip(items.tasks, items.splits)):
        prefix = f"{task}/" if split == "heldout" else f"{task}/train_"
        scores = _item_scores(ctx, *items.answer_tokens(task, split), decode=split == "heldout")
        for name, (rows, values, weights) in scores.items():
            metrics[prefix + name] = ctx.record_items(prefix + name, rows, values, weights, task=task, split=split,
                                                      **SPECS[name])
    return metrics


def _item_scores(ctx, rows, positions, targets, decode: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{metric: (item rows, per-item value, per-item weight)} for one task's answer tokens;
    `decode`: with the token edit distance of the greedy answer."""
    if all("wrong" in ctx.items.metadata[i] for i in rows.unique().tolist()):
        return _choice_scores(ctx, rows, positions, targets)
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
    if decode:  # Levenshtein distance from the greedy answer to the answer, per answer token
        greedy = ctx.greedy_answers(items)[per_item, positions + 1]  # (K,): the answer tokens greedy decoding writes
        lengths = n_tokens.long().tolist()
        edits = [Levenshtein.distance(g.tolist(), t.tolist()) for g, t in zip(greedy.split(lengths), targets.split(lengths))]
        scores["edit_distance"] = (items, torch.tensor(edits, dtype=torch.double) / n_tokens, ones)
    return scores


def _choice_scores(ctx, rows, positions, targets) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per item, at the first answer token: does the right form outscore the wrong one
    (`agreement`), and its probability among the two (`agreement_prob`)."""
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, positions, targets = rows[first], positions[first], targets[first]
    wrong = torch.tensor([ctx.token_ids[ctx.items.metadata[i]["wrong"]] for i in rows.tolist()])
    logits = ctx.forward("items").logits[rows, positions].double()
    right_score, wrong_score = logits.gather(1, targets[:, None]).squeeze(1), logits.gather(1, wrong[:, None]).squeeze(1)
    ones = torch.ones(len(rows), dtype=torch.double)
    return {"agreement": (rows, (right_score > wrong_score).double(), ones),
            "agreement_prob": (rows, torch.sigmoid(right_score - wrong_score), ones)}
