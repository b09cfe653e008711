"""Weight statistics: L2 norms in total and per layer (the grokking clean-up signal)."""

from __future__ import annotations

from observatory.metrics import WEIGHTS, Metric
from observatory.probes.registry import probe


@probe("weights", version=2)
def weights(ctx, settings) -> dict:
    groups: dict[str, float] = {}
    for name, param in ctx.model.named_parameters():  # tied weights are listed once
        group = ".".join(name.split(".")[:2]) if name.startswith("blocks.") else name.split(".")[0]
        groups[group] = groups.get(group, 0.0) + param.detach().double().pow(2).sum().item()
    spec = dict(kind="norm", low=0.0, role=WEIGHTS, unit="L2")  # exact: no sampling error
    metrics = {f"norm/{group}": Metric(value**0.5, label=f"weight norm, {group}", **spec) for group, value in groups.items()}
    for layer in range(ctx.model.cfg.n_layer):  # a block's norm belongs to its layer
        metrics[f"norm/blocks.{layer}"] = Metric(groups[f"blocks.{layer}"] ** 0.5, label="weight norm, one block",
                                                layer=layer, **spec)
    metrics["norm/total"] = Metric(sum(groups.values()) ** 0.5, label="weight norm, all parameters", primary=True, **spec)
    return metrics
