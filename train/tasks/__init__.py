"""The capability suite: synthetic tasks whose answers are known exactly.

Each task samples items `{"task", "prompt", "answer", "suffix", "metadata"}` (space-separated
symbols) and splits its item space into a training part and a disjoint held-out part by a
fixed hash of each item's key.
"""

from train.tasks.arithmetic import Addition, ModularAddition
from train.tasks.base import Item, Task
from train.tasks.grammar import Grammar
from train.tasks.sequences import AssociativeRecall, Dyck, Induction, Sorting

TASKS = {cls.name: cls for cls in (Induction, AssociativeRecall, ModularAddition, Addition, Dyck, Sorting, Grammar)}


def make_task(name: str, **params) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name](**params)


MIXTURE_KEYS = ("weight", "linear_items")  # what a mixture spec says about a task besides its parameters


def split_weights(tasks: dict) -> tuple[dict, dict]:
    """A mixture spec `{name: {weight, linear_items, **params}}` -> ({name: weight}, {name: params})."""
    weights = {name: float(spec.get("weight", 1.0)) for name, spec in tasks.items()}
    params = {name: {k: v for k, v in spec.items() if k not in MIXTURE_KEYS} for name, spec in tasks.items()}
    return weights, params


__all__ = ["TASKS", "Item", "Task", "make_task", "split_weights"]
