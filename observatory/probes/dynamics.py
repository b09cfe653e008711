"""The model's outputs on a fixed probe set, for "essential dynamics" (Hoogland et al. 2024):
the log-probability of the next token at a fixed set of positions of the held-out blocks and
the training-data blocks (the positions training takes its loss on), the same positions at
every checkpoint. The report stacks a run's vectors over checkpoints, takes their PCA and
finds the trajectory's turning points (observatory/analysis/stages.py).

Stored as the per-item scores of one metric, `logprob` (their mean, a log-probability): item
i is the i-th position of the fixed set (not a row of probe_items.jsonl, as for capability),
so the vectors live in item_results.parquet beside the other per-item scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from observatory.metrics import STAGE_SIGNAL
from observatory.probes.registry import probe

INPUTS = ("blocks", "train_blocks")  # held-out examples, training-data examples: both packed as training packs


def positions(ctx, max_positions: int, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(input set, rows, positions)]: up to `max_positions` of the training loss's positions of
    the input sets, drawn once with `seed` (the same for every checkpoint of a run)."""
    chosen = []
    for name in INPUTS:
        mask = ctx.loss_masks.get(name)
        if mask is None or not mask.numel():
            continue
        rows, cols = mask.nonzero(as_tuple=True)
        chosen += [(name, r, c) for r, c in zip(rows.tolist(), cols.tolist())]
    if len(chosen) > max_positions:
        pick = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed))[:max_positions]
        chosen = [chosen[i] for i in sorted(pick.tolist())]
    out = []
    for name in INPUTS:
        mine = [(r, c) for n, r, c in chosen if n == name]
        if mine:
            rows, cols = (torch.tensor(x, dtype=torch.long) for x in zip(*mine))
            out.append((name, rows, cols))
    return out


@dataclass(frozen=True)
class Settings:
    max_positions: int  # positions of the fixed set
    seed: int  # draws them, once per run


@probe("essential_dynamics", version=1, settings=Settings)
def essential_dynamics(ctx, settings: Settings) -> dict:
    values = []
    for name, rows, cols in positions(ctx, settings.max_positions, settings.seed):
        fwd = ctx.forward(name)
        targets = ctx.targets[name][rows, cols]
        values.append(fwd.logprobs(rows, cols).gather(1, targets[:, None]).squeeze(1).double())
    if not values:
        return {}
    v = torch.cat(values)
    return {"logprob": ctx.record_items("logprob", torch.arange(len(v)), v, torch.ones_like(v), kind="logprob",
                                        low=None, high=0.0, role=STAGE_SIGNAL, primary=True,
                                        label="next-token log-probability at fixed positions", unit="nats")}
