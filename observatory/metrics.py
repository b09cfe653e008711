"""What a probe's number is. Every probe metric carries its kind, its range, the direction
in which it improves, its chance level where it has one, and its sampling error; onset
detection, charts and the report read these, never a metric's name, so the same numbers get
the same verdict whatever they are called."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("accuracy", "logprob", "loss", "norm", "score")
SPEC_COLUMNS = ["kind", "higher_is_better", "low", "high", "chance", "stderr"]  # beside `value` in the results


@dataclass(frozen=True)
class Metric:
    value: float
    kind: str  # one of KINDS
    higher_is_better: bool = True  # the direction an onset is read in (for a norm: growth)
    low: float | None = None  # the range a perfect model's value lies in; None: unbounded
    high: float | None = None
    chance: float | None = None  # the value of a model that has not learned the capability
    stderr: float | None = None  # sampling error of `value` over the items or sequences it averages

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric kind {self.kind!r} is not one of {KINDS}")

    @property
    def best(self) -> float | None:
        """The top of a bounded metric: what a perfect model scores."""
        return self.high if self.higher_is_better else self.low


def mean_with_error(values, weights=None, **spec) -> Metric:
    """The weighted mean of per-item (or per-sequence) values and its standard error
    (Σ w_i² (v_i - m)² / (Σ w_i)², items independent). An accuracy's error is never below that
    of a proportion with one success and one failure added (Agresti-Coull): a curve that
    reads 0/128 and 1/128 is not noiseless."""
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    m = float((v * w).sum() / w.sum())
    stderr = math.sqrt(float((w**2 * (v - m) ** 2).sum())) / float(w.sum())
    if spec.get("kind") == "accuracy":
        n = float(w.sum() ** 2 / (w**2).sum())  # effective number of items
        p = (m * n + 1) / (n + 2)
        stderr = max(stderr, math.sqrt(p * (1 - p) / n))
    return Metric(m, stderr=stderr, **spec)


# the specs the built-in probes share
ACCURACY = dict(kind="accuracy", low=0.0, high=1.0)
LOSS = dict(kind="loss", higher_is_better=False, low=0.0)


def min_rise(low: float | None, high: float | None, share: float = 0.05) -> float:
    """The smallest rise that counts as an onset: `share` of a bounded metric's range (a few
    items of a probe set), nothing for an unbounded one (its noise decides)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return 0.0
    return share * (high - low)
