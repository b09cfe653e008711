"""What a probe's number is. Every probe metric carries what it measures (its spec: kind,
range, the direction in which it improves, chance level, sampling error) and what it is
(its identity: role, task, split, component, label, unit). Onset detection, tables, charts
and the report read these columns, never a metric's name, so the same numbers get the same
verdict and the same words whatever they are called."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import numpy as np

KINDS = ("accuracy", "logprob", "loss", "norm", "score")

# What part a metric plays in the analysis.
ALL_OR_NOTHING = "all-or-nothing"  # a task's answer scored right or wrong as a whole (exact match)
CONTINUOUS = "continuous"  # a task's score that credits partial progress (per-token accuracy, log-prob)
MECHANISM = "mechanism"  # a circuit's signature (head scores, the in-context learning score)
REPRESENTATION = "representation"  # what a readout finds in the activations (linear probes)
LOSS = "loss"  # held-out loss
WEIGHTS = "weights"  # statistics of the weights (norms)
STAGE_SIGNAL = "stage signal"  # a developmental signal whose change points are stages, not onsets (LLC)
SAMPLER = "sampler"  # a stage signal's own detail: one chain's estimate, the sampler's health
NGRAM = "n-gram statistics"  # distance of the predictions from n-gram statistics: read for its minimum, not an onset
ROLES = (ALL_OR_NOTHING, CONTINUOUS, MECHANISM, REPRESENTATION, LOSS, WEIGHTS, STAGE_SIGNAL, SAMPLER, NGRAM)
CURVE_ROLES = ROLES[:6]  # the curves that onsets are read from
TASK_ROLES = (ALL_OR_NOTHING, CONTINUOUS)  # the mirage question compares these within a task
SPLITS = ("heldout", "train")  # items the run never trained on, items from its training stream

SPEC_COLUMNS = ["kind", "higher_is_better", "low", "high", "chance", "stderr"]
IDENTITY_COLUMNS = ["role", "task", "split", "layer", "head", "sample", "label", "unit", "primary"]
# LLC health (role SAMPLER), one label each, read per estimate: observatory/analysis/tables.py
LLC_HEALTH = {"drift": "sampler drift", "diverged": "diverged chains", "negative": "negative chains",
              "healthy": "healthy", "init_loss": "loss at the checkpoint"}


@dataclass(frozen=True)
class Metric:
    value: float
    kind: str  # one of KINDS
    higher_is_better: bool = True  # the direction an onset is read in (for a norm: growth)
    low: float | None = None  # the range a perfect model's value lies in; None: unbounded
    high: float | None = None
    chance: float | None = None  # the value of a model that has not learned the capability
    stderr: float | None = None  # sampling error of `value` over the items or sequences it averages
    _: KW_ONLY
    role: str  # one of ROLES
    label: str  # what it is, in words: "exact match", "induction score"
    unit: str = ""  # "fraction of items", "nats", "attention weight"
    task: str | None = None  # the capability task it scores
    split: str | None = None  # one of SPLITS: the items it is measured on
    layer: int | None = None  # the component it belongs to (TransformerLens numbering); None: the whole model
    head: int | None = None
    sample: int | None = None  # which of an estimate's independent samples it is (an SGLD chain)
    primary: bool = False  # the metric that stands for its task's role, or for its probe, in summaries

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric kind {self.kind!r} is not one of {KINDS}")
        if self.role not in ROLES:
            raise ValueError(f"metric role {self.role!r} is not one of {ROLES}")
        if self.split not in (None, *SPLITS):
            raise ValueError(f"metric split {self.split!r} is not one of {SPLITS}")

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
LOSS_SPEC = dict(kind="loss", higher_is_better=False, low=0.0, role=LOSS, unit="nats per token")


def component_name(layer: int | None, head: int | None) -> str | None:
    """A component as TransformerLens's demos write it: "L1H0" (a head), "L1" (a layer)."""
    if absent(layer):  # the whole model
        return None
    return f"L{int(layer)}" + ("" if absent(head) else f"H{int(head)}")


def absent(value) -> bool:
    """None, NaN or pandas' NA: a field the metric does not have."""
    try:
        return value is None or bool(value != value)
    except TypeError:  # pandas' NA has no truth value
        return True


def min_rise(low: float | None, high: float | None, share: float = 0.05) -> float:
    """The smallest rise that counts as an onset: `share` of a bounded metric's range (a few
    items of a probe set), nothing for an unbounded one (its noise decides)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return 0.0
    return share * (high - low)
