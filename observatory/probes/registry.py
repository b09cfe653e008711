"""Probes by name: a probe family registers itself with @probe(name, hooks=..., version=...)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from observatory.probes.context import Context


@dataclass(frozen=True)
class Probe:
    name: str
    fn: Callable[[Context, dict], dict]  # -> {metric name: observatory.metrics.Metric}
    hooks: Callable[[object, dict], dict[str, list[str]]]  # (model config, probe cfg) -> {input set: hooks}
    version: int  # bump when the probe's code changes its numbers: stored results are redone
    check: Callable[[dict], object] | None = None  # raises ValueError on bad settings, before any work

    def config_hash(self, cfg: dict) -> str:
        blob = json.dumps({"probe": self.name, "version": self.version, "cfg": cfg}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PROBES: dict[str, Probe] = {}


def requested_hooks(model_cfg, probe_cfgs: dict) -> dict[str, set[str]]:
    """{input set: the union of the hooks every selected probe needs on it}."""
    hooks: dict[str, set[str]] = {}
    for name, cfg in probe_cfgs.items():
        for input_set, names in PROBES[name].hooks(model_cfg, cfg).items():
            hooks.setdefault(input_set, set()).update(names)
    return hooks


def probe(name: str, hooks=None, version: int = 1, check=None):
    def register(fn):
        PROBES[name] = Probe(name, fn, hooks or (lambda model_cfg, cfg: {}), version, check)
        return fn

    return register
