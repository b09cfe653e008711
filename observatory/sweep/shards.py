"""Which job probes which checkpoint when a sweep is split into `shards` jobs
(`python -m observatory -m shard='range(0,N)' shards=N`): every job computes the same
assignment from the same manifests, so no job waits on another or asks another anything.

The pairs are dealt longest first to the least loaded shard (LPT scheduling), by an estimate of
each checkpoint's cost: a forward pass costs about n_params x n_ctx, and every checkpoint pays a
fixed price besides (loading, the probes' own arithmetic). Already probed checkpoints are dealt
too, so that a shard re-run after a kill gets the same share and finishes it."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

FIXED_COST = 2e6  # parameter x positions: what loading and the probes' arithmetic cost beside the forward passes


class ShardError(ValueError):
    """The shard settings cannot split a sweep; the message names the fix."""


def check(shard: int, shards: int, adaptive: int | None = None) -> None:
    if shards < 1 or not 0 <= shard < shards:
        raise ShardError(f"shard={shard} shards={shards}: shard must be one of 0..shards-1 "
                         f"(e.g. -m shard='range(0,{max(shards, 1)})' shards={max(shards, 1)})")
    if shards > 1 and adaptive:
        raise ShardError("adaptive cannot be split into shards (its second round depends on every checkpoint's "
                         "first-round results): drop adaptive=..., or shards=1")


def cost(n_params: int, n_ctx: int) -> float:
    return n_params * n_ctx + FIXED_COST


def assign(pairs: Iterable, costs: dict, shards: int) -> dict:
    """pair -> shard: the costliest first, each to the shard with the least cost so far (ties
    to the lowest shard). `pairs` are sortable and hashable (run, step) keys; `costs` maps them."""
    order = sorted(pairs, key=lambda pair: (-costs[pair], pair))
    loads = [(0.0, shard) for shard in range(shards)]
    owner = {}
    for pair in order:
        load, shard = heapq.heappop(loads)
        owner[pair] = shard
        heapq.heappush(loads, (load + costs[pair], shard))
    return owner
