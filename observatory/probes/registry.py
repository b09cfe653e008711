"""Probes by name: a probe family registers itself with @probe(name, hooks=..., version=...,
settings=...). A probe's settings come from its config file alone (conf/probes/); `settings`
declares their names and types, with no defaults, so that code holds no second copy of them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

from observatory.probes.context import Context


@dataclass(frozen=True)
class NoSettings:
    """A probe with nothing to set."""


@dataclass(frozen=True)
class Probe:
    name: str
    fn: Callable[[Context, object], dict]  # (context, settings) -> {metric name: observatory.metrics.Metric}
    hooks: Callable[[object, object], dict[str, list[str]]]  # (model config, settings) -> {input set: hooks}
    version: int  # bump when the probe's code changes its numbers: stored results are redone
    settings: type = NoSettings  # a dataclass: the settings' names and types

    def configure(self, cfg: dict | None):
        """The probe's settings from its config, checked against its schema: every setting
        given, none unknown, each of its declared type. Raises ValueError naming the fix."""
        return parse_settings(self.settings, dict(cfg or {}), f"probes.{self.name}")

    def config_hash(self, cfg: dict | None) -> str:
        """Over the settings as filled in and checked: a setting changed anywhere changes the
        hash, so that probe alone is redone."""
        settings = dataclasses.asdict(self.configure(cfg))
        blob = json.dumps({"probe": self.name, "version": self.version, "settings": settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PROBES: dict[str, Probe] = {}


def parse_settings(schema: type, cfg: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown, missing = sorted(set(cfg) - set(fields)), sorted(set(fields) - set(cfg))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    if missing:
        raise ValueError(f"{where}: missing setting(s) {missing}; the probe's config file in conf/probes/ sets "
                         "every one (compose it, or copy its settings)")
    hints = typing.get_type_hints(schema)
    for name, value in cfg.items():
        if not _is_instance(value, hints[name]):
            raise ValueError(f"{where}.{name}: {value!r} is not a {hints[name]}")
    return schema(**{k: (float(v) if hints[k] is float else v) for k, v in cfg.items()})


def _is_instance(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (object,)
        return isinstance(value, (list, tuple)) and all(_is_instance(v, item) for v in value)
    if hint is float:  # YAML writes 1000 for 1000.0
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def requested_hooks(model_cfg, probe_cfgs: dict) -> dict[str, set[str]]:
    """{input set: the union of the hooks every selected probe needs on it}."""
    hooks: dict[str, set[str]] = {}
    for name, cfg in probe_cfgs.items():
        probe_ = PROBES[name]
        for input_set, names in probe_.hooks(model_cfg, probe_.configure(cfg)).items():
            hooks.setdefault(input_set, set()).update(names)
    return hooks


def probe(name: str, hooks=None, version: int = 1, settings: type = NoSettings):
    def register(fn):
        PROBES[name] = Probe(name, fn, hooks or (lambda model_cfg, s: {}), version, settings)
        return fn

    return register
