"""Linear probes: decode a task's latent (the first answer token, e.g. the modular sum) from
the residual stream at the last prompt position, layer by layer, with held-out accuracy.

A ridge-regularized least-squares readout to one-hot targets, fit on the first half of the
items and scored on the second: closed form, deterministic, no optimizer to tune."""

from __future__ import annotations

import torch

from observatory.probes import probe


def _resid_hooks(model_cfg, cfg):
    layers = [f"blocks.{i}.hook_resid_pre" for i in range(model_cfg.n_layer)]
    return {"items": layers + [f"blocks.{model_cfg.n_layer - 1}.hook_resid_post"]}


def ridge_probe_accuracy(features: torch.Tensor, labels: torch.Tensor, n_train: int, ridge: float) -> float:
    """Fit on the first n_train rows, return argmax accuracy on the rest."""
    x = features.double()
    mean = x[:n_train].mean(0)
    x = torch.cat([x - mean, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # centred, plus a bias column
    classes = labels.unique()
    y = (labels[:, None] == classes[None, :]).double()
    xtx = x[:n_train].T @ x[:n_train] + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(xtx, x[:n_train].T @ y[:n_train])
    predicted = classes[(x[n_train:] @ w).argmax(1)]
    return (predicted == labels[n_train:]).double().mean().item()


@probe("linear", inputs=("items",), hooks=_resid_hooks)
def linear(ctx, cfg) -> dict[str, float]:
    fwd, items = ctx.forward("items"), ctx.items
    metrics = {}
    for task in cfg.get("tasks", []):
        rows = torch.tensor(items.rows(task, "heldout"), dtype=torch.long)
        if len(rows) < 4:
            continue
        last_prompt = items.prompt_len[rows] - 1
        labels = torch.tensor([items.answer_ids[i][0] for i in rows.tolist()])
        n_train = int(len(rows) * cfg.get("train_fraction", 0.5))
        names = sorted(fwd.cache, key=lambda h: (int(h.split(".")[1]), h.endswith("post")))
        best = 0.0
        for layer, name in enumerate(names):  # layer 0: embeddings; layer L: the final residual stream
            features = fwd.cache[name][rows, last_prompt]
            accuracy = ridge_probe_accuracy(features, labels, n_train, cfg.get("ridge", 1e-3))
            metrics[f"{task}/layer{layer}"] = accuracy
            best = max(best, accuracy)
        metrics[f"{task}/best"] = best
    return metrics
