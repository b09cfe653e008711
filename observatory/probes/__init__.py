"""The probe registry. A probe is a small function `fn(ctx, cfg) -> {name: Metric}` over a
checkpoint's shared forward passes (`Context.forward(input_set)`); each Metric carries its
value and what it is (observatory/metrics.py: kind, range, chance, sampling error). A probe
declares the hook points it needs on each input set, so that each input set runs through the
model once per checkpoint (on first use) with the union of every selected probe's hooks."""

# the built-in probe families register themselves on import (each imports only the registry)
from observatory.probes import attention, capability, dynamics, linear, llc, loss, ngram, weights  # noqa: F401
from observatory.probes.registry import PROBES, Probe, probe, requested_hooks  # noqa: F401 (the package's API)
