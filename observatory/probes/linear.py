"""Linear probes: decode a task's latent (the first answer token, e.g. the modular sum) from
the residual stream at the last prompt position, layer by layer.

The probe has items of its own (split "linear" in probe_items.jsonl, drawn from the whole
item space), so that every class has examples to fit: the first `fit_fraction` of them fit a
linear discriminant (class means and a shared, shrunk covariance: closed form, deterministic,
no optimizer to tune), the rest score it. The classes are those of the fitted items alone; an
item of another class counts as wrong. Chance is the accuracy of always answering the most
frequent fitted class.

A least-squares readout to one-hot targets, used before, underrates a linear code: on the
grokking experiment's final checkpoint (held-out exact match 1.0) it read the sum from the
final residual stream at 0.707, where this discriminant and a softmax regression both read
it at 1.000."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from observatory.metrics import ACCURACY, REPRESENTATION, Metric, mean_with_error
from observatory.probes.registry import probe
from train.hooks import act_name, hook_layer

SPLIT = "linear"


@dataclass(frozen=True)
class Settings:
    tasks: list[str]  # tasks with linear items (data.tasks.<task>.linear_items)
    fit_fraction: float  # the first share of the items fit the readout, the rest score it
    shrinkage: float  # of the shared covariance, towards its mean variance


def _resid_hooks(model_cfg, cfg):
    layers = [act_name("resid_pre", i) for i in range(model_cfg.n_layer)]
    return {"linear_items": layers + [act_name("resid_post", model_cfg.n_layer - 1)]}


def linear_probe(features: torch.Tensor, labels: torch.Tensor, n_fit: int, shrinkage: float) -> tuple[torch.Tensor, float]:
    """Fit on the first n_fit rows; returns (per-row correctness of the rest, chance accuracy).
    Linear discriminant analysis: score_c(x) = x·Σ⁻¹μ_c − ½ μ_c·Σ⁻¹μ_c + log π_c, with Σ the
    pooled within-class covariance plus `shrinkage` times its mean variance on the diagonal."""
    x, fit = features.double(), labels[:n_fit]
    classes, inverse, counts = fit.unique(return_inverse=True, return_counts=True)  # what the probe can answer
    means = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x[:n_fit]) / counts[:, None]
    within = x[:n_fit] - means[inverse]
    cov = within.T @ within / max(n_fit - len(classes), 1)
    cov += (shrinkage * cov.diagonal().mean() + 1e-9) * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(cov, means.T)  # (d, C)
    bias = -0.5 * (means * w.T).sum(1) + torch.log(counts.double() / n_fit)
    predicted = classes[(x[n_fit:] @ w + bias).argmax(1)]
    chance = (labels[n_fit:] == classes[counts.argmax()]).double().mean().item()
    return (predicted == labels[n_fit:]).double(), chance


@probe("linear", hooks=_resid_hooks, version=3, settings=Settings)
def linear(ctx, settings: Settings) -> dict:
    items = ctx.linear_items
    if items is None:
        return {}
    fwd, metrics = ctx.forward("linear_items", logits=False), {}
    names = sorted(fwd.cache, key=lambda h: (hook_layer(h), h.endswith("post")))
    for task in settings.tasks:
        rows = torch.tensor(items.rows(task, SPLIT), dtype=torch.long)
        n_fit = int(len(rows) * settings.fit_fraction)
        if n_fit < 2 or len(rows) - n_fit < 2:
            continue
        last_prompt = items.prompt_len[rows] - 1
        labels = torch.tensor([items.answer_ids[i][0] for i in rows.tolist()])
        scores: list[Metric] = []
        for layer, name in enumerate(names):  # layer 0: embeddings; layer L: the final residual stream
            correct, chance = linear_probe(fwd.cache[name][rows, last_prompt], labels, n_fit, settings.shrinkage)
            metrics[f"{task}/layer{layer}"] = mean_with_error(
                correct.numpy(), chance=chance, role=REPRESENTATION, label="linear probe accuracy",
                unit="fraction of items", task=task, split="heldout", layer=layer, **ACCURACY)
            scores.append(metrics[f"{task}/layer{layer}"])
        best = max(scores, key=lambda m: m.value)
        metrics[f"{task}/best"] = replace(best, label="linear probe accuracy, best layer", layer=None, primary=True)
    return metrics
