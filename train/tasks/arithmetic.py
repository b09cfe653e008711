"""Modular addition (the grokking task) and multi-digit addition (the "mirage" task)."""

from __future__ import annotations

import random

from train.tasks.base import Item, Task


class ModularAddition(Task):
    """`a + b = c`, c = (a + b) mod p, each number one token. A fraction of all p² pairs is
    trained on and the rest held out (Power et al. 2022; Nanda et al. 2023: p=113, 30%)."""

    name, marker = "modular_addition", "[mod]"

    def __init__(self, p: int = 113, train_fraction: float = 0.3):
        if p < 2:
            raise ValueError(f"modular_addition: p must be >= 2, got {p}")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"modular_addition: train_fraction must be in (0, 1), got {train_fraction}")
        super().__init__(held_out=1.0 - train_fraction)
        self.p = p

    def symbols(self) -> list[str]:
        return [self.marker, "+", "="] + [str(i) for i in range(self.p)]

    def sample(self, rng: random.Random) -> Item:
        a, b = rng.randrange(self.p), rng.randrange(self.p)
        return self.item(f"{a} + {b} =", str((a + b) % self.p), a=a, b=b)


class Addition(Task):
    """n-digit addition, one token per digit, the answer zero-padded to n+1 digits: exact
    match looks abrupt where per-digit accuracy looks smooth (Schaeffer et al. 2023)."""

    name, marker = "addition", "[add]"

    def __init__(self, n_digits: int = 3, held_out: float = 0.1):
        if n_digits < 1:
            raise ValueError(f"addition: n_digits must be >= 1, got {n_digits}")
        super().__init__(held_out)
        self.n_digits = n_digits

    def symbols(self) -> list[str]:
        return [self.marker, "+", "="] + [str(d) for d in range(10)]

    def sample(self, rng: random.Random) -> Item:
        a, b = rng.randrange(10**self.n_digits), rng.randrange(10**self.n_digits)
        digits = lambda x, width: " ".join(f"{x:0{width}d}")  # noqa: E731
        n = self.n_digits
        return self.item(f"{digits(a, n)} + {digits(b, n)} =", digits(a + b, n + 1), a=a, b=b)
