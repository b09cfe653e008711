"""Numbers and metrics for people: counts with SI suffixes, values to 3 significant digits,
intervals, and a metric's name in words from its declared identity (label, task, split,
component, unit). The console, headline.txt, W&B and the page all write them through here."""

from __future__ import annotations

import math

import numpy as np

from observatory.metrics import absent, component_name

SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def count(value) -> str:
    """Steps, tokens, FLOPs, parameters: 3 significant digits with a suffix (2.39k, 1.2M, 3.47T)."""
    if value is None or not np.isfinite(value):
        return "—"
    for scale, suffix in SI:
        if abs(value) >= scale * 0.9995:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if abs(value) < 1 else f"{round(value):d}" if abs(value) < 100 else f"{value:.3g}"


def value(v) -> str:
    """A metric's value: 3 significant digits (0.0723, 0.688, 1.00, -1.23); large ones as counts."""
    if v is None or not np.isfinite(v):
        return "—"
    if abs(v) >= 1e4:
        return count(v)
    text = f"{v:#.3g}"
    return text.rstrip(".") if "e" not in text else f"{v:.2e}"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def interval(low, high) -> str:
    """'[2.32k–2.53k]'; whole steps where 3 digits would print both ends alike ('[1,388–1,391]')."""
    if _missing(low) or _missing(high):
        return ""
    if count(low) == count(high) and abs(high) >= 1000:
        return f"[{low:,.0f}–{high:,.0f}]"
    return f"[{count(low)}–{count(high)}]"


def label(info) -> str:
    """A metric in words: its label, its component, and its items where they are trained ones
    ('exact match (trained items)', 'induction score L1H0'). `info`: a row with identity columns."""
    text = str(info["label"])
    component = component_name(info["layer"], info["head"])
    if component:
        text += f" {component}"
    return text + (" (trained items)" if not absent(info["split"]) and info["split"] == "train" else "")


def title(info) -> str:
    """A chart panel's title: the task (if any) and the metric ('sorting: exact match')."""
    return label(info) if absent(info["task"]) else f"{info['task']}: {label(info)}"


def axis_title(info, wrap: int = 36) -> str:
    """A value axis: the metric with its unit ('exact match (fraction of items)'), the unit on
    a second line where both would not fit beside a small panel (`wrap` characters)."""
    unit = "" if absent(info["unit"]) else str(info["unit"])
    if not unit:
        return label(info)
    return f"{label(info)}{' ' if len(label(info)) + len(unit) + 3 <= wrap else '<br>'}({unit})"
