"""Synthetic tasks with known answers.

A task names its symbols (the tokenizer's vocabulary) and yields examples as
`{"task", "prompt", "answer"}` with space-separated symbols. Training and held-out
examples come from disjoint parts of the task's item space, chosen from `seed`.
"""

from __future__ import annotations

import random
from typing import Iterator


class ModularAddition:
    """`a + b = c` with c = (a + b) mod p. A fraction of all p² pairs is trained on and the
    rest is held out: the grokking setting (Power et al. 2022; Nanda et al. 2023)."""

    name = "modular_addition"

    def __init__(self, p: int = 113, train_fraction: float = 0.3):
        if p < 2:
            raise ValueError(f"modular_addition: p must be >= 2, got {p}")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"modular_addition: train_fraction must be in (0, 1), got {train_fraction}")
        self.p, self.train_fraction = p, train_fraction

    def symbols(self) -> list[str]:
        return [str(i) for i in range(self.p)] + ["+", "="]

    def examples(self, split: str, seed: int) -> Iterator[dict]:
        pairs = [(a, b) for a in range(self.p) for b in range(self.p)]
        random.Random(seed).shuffle(pairs)
        n_train = round(self.train_fraction * len(pairs))
        chosen = pairs[:n_train] if split == "train" else pairs[n_train:]
        for a, b in chosen:
            yield {"task": self.name, "prompt": f"{a} + {b} =", "answer": str((a + b) % self.p)}


TASKS = {cls.name: cls for cls in (ModularAddition,)}


def make_task(name: str, **params):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name](**params)
