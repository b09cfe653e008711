"""Linear probes: decode a task's latent (the first answer token, e.g. the modular sum) from
the residual stream at the last prompt position, layer by layer.

The probe has items of its own (split "linear" in probe_items.jsonl, drawn from the whole
item space), so that every class has examples to fit: the first `fit_fraction` of them fit a
ridge-regularized least-squares readout to one-hot targets (closed form, deterministic, no
optimizer to tune), the rest score it. The classes are those of the fitted items alone; an
item of another class counts as wrong. Chance is the accuracy of always answering the most
frequent fitted class."""

from __future__ import annotations

import torch

from observatory.metrics import ACCURACY, Metric, mean_with_error
from observatory.probes import probe

SPLIT = "linear"


def _resid_hooks(model_cfg, cfg):
    layers = [f"blocks.{i}.hook_resid_pre" for i in range(model_cfg.n_layer)]
    return {"linear_items": layers + [f"blocks.{model_cfg.n_layer - 1}.hook_resid_post"]}


def ridge_probe(features: torch.Tensor, labels: torch.Tensor, n_fit: int, ridge: float) -> tuple[torch.Tensor, float]:
    """Fit on the first n_fit rows; returns (per-row correctness of the rest, chance accuracy)."""
    x = features.double()
    mean = x[:n_fit].mean(0)
    x = torch.cat([x - mean, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # centred, plus a bias column
    classes, counts = labels[:n_fit].unique(return_counts=True)  # what the readout can answer
    y = (labels[:n_fit, None] == classes[None, :]).double()
    xtx = x[:n_fit].T @ x[:n_fit] + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(xtx, x[:n_fit].T @ y)
    predicted = classes[(x[n_fit:] @ w).argmax(1)]
    chance = (labels[n_fit:] == classes[counts.argmax()]).double().mean().item()
    return (predicted == labels[n_fit:]).double(), chance


@probe("linear", inputs=("linear_items",), hooks=_resid_hooks, version=2)
def linear(ctx, cfg) -> dict:
    items = ctx.linear_items
    if items is None:
        return {}
    fwd, metrics = ctx.forward("linear_items"), {}
    names = sorted(fwd.cache, key=lambda h: (int(h.split(".")[1]), h.endswith("post")))
    for task in cfg.get("tasks", []):
        rows = torch.tensor(items.rows(task, SPLIT), dtype=torch.long)
        n_fit = int(len(rows) * cfg.get("fit_fraction", 0.75))
        if n_fit < 2 or len(rows) - n_fit < 2:
            continue
        last_prompt = items.prompt_len[rows] - 1
        labels = torch.tensor([items.answer_ids[i][0] for i in rows.tolist()])
        scores: list[Metric] = []
        for layer, name in enumerate(names):  # layer 0: embeddings; layer L: the final residual stream
            correct, chance = ridge_probe(fwd.cache[name][rows, last_prompt], labels, n_fit, cfg.get("ridge", 1e-3))
            metrics[f"{task}/layer{layer}"] = mean_with_error(correct.numpy(), chance=chance, **ACCURACY)
            scores.append(metrics[f"{task}/layer{layer}"])
        metrics[f"{task}/best"] = max(scores, key=lambda m: m.value)
    return metrics
