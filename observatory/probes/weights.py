"""Weight statistics: L2 norms in total and per layer (the grokking clean-up signal)."""

from __future__ import annotations

from observatory.metrics import Metric
from observatory.probes.registry import probe


@probe("weights", version=2)
def weights(ctx, cfg) -> dict:
    groups: dict[str, float] = {}
    for name, param in ctx.model.named_parameters():  # tied weights are listed once
        group = ".".join(name.split(".")[:2]) if name.startswith("blocks.") else name.split(".")[0]
        groups[group] = groups.get(group, 0.0) + param.detach().double().pow(2).sum().item()
    norms = {f"norm/{group}": value**0.5 for group, value in groups.items()} | {"norm/total": sum(groups.values()) ** 0.5}
    return {name: Metric(value, kind="norm", low=0.0) for name, value in norms.items()}  # exact: no sampling error
