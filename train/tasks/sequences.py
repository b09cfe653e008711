"""Sequence tasks: induction (repeated random tokens), associative recall, sorting, Dyck."""

from __future__ import annotations

import random

from train.tasks.base import Item, Task

BRACKETS = ["()", "[]", "{}", "<>"]


class Induction(Task):
    """A random segment, a separator, then the segment again: the copy is predictable only
    from context, by an induction head (Olsson et al. 2022). The segment length varies
    (min_length..length), so that no fixed positional offset can do the copying."""

    name, marker = "induction", "[copy]"

    def __init__(self, n_symbols: int = 64, length: int = 12, min_length: int | None = None, held_out: float = 0.1):
        min_length = max(1, length // 2) if min_length is None else min_length
        if n_symbols < 2 or not 1 <= min_length <= length:
            raise ValueError(f"induction: need n_symbols >= 2 and 1 <= min_length <= length, got "
                             f"{n_symbols}, {min_length}, {length}")
        super().__init__(held_out)
        self.n_symbols, self.length, self.min_length = n_symbols, length, min_length

    def symbols(self) -> list[str]:
        return [self.marker, "|"] + [f"r{i}" for i in range(self.n_symbols)]

    def sample(self, rng: random.Random) -> Item:
        n = rng.randint(self.min_length, self.length)
        segment = " ".join(f"r{rng.randrange(self.n_symbols)}" for _ in range(n))
        return self.item(f"{segment} |", segment)


class AssociativeRecall(Task):
    """Key-value pairs, then queries: each earlier query is answered in the prompt and the
    last one is the answer (multi-query associative recall, Arora et al. 2023)."""

    name, marker = "associative_recall", "[recall]"

    def __init__(self, n_keys: int = 32, n_values: int = 32, n_pairs: int = 6, n_queries: int = 3,
                 held_out: float = 0.1):
        if not 1 <= n_pairs <= n_keys or n_queries < 1:
            raise ValueError(f"associative_recall: need 1 <= n_pairs <= n_keys and n_queries >= 1")
        super().__init__(held_out)
        self.n_keys, self.n_values, self.n_pairs, self.n_queries = n_keys, n_values, n_pairs, n_queries

    def symbols(self) -> list[str]:
        return [self.marker, "?"] + [f"k{i}" for i in range(self.n_keys)] + [f"v{i}" for i in range(self.n_values)]

    def sample(self, rng: random.Random) -> Item:
        keys = rng.sample(range(self.n_keys), self.n_pairs)
        value = {k: rng.randrange(self.n_values) for k in keys}
        queries = [rng.choice(keys) for _ in range(self.n_queries)]
        pairs = " ".join(f"k{k} v{value[k]}" for k in keys)
        answered = "".join(f" ? k{q} v{value[q]}" for q in queries[:-1])
        return self.item(f"{pairs}{answered} ? k{queries[-1]}", f"v{value[queries[-1]]}", query=queries[-1])


class Sorting(Task):
    """A list of numbers, then the same numbers in ascending order."""

    name, marker = "sorting", "[sort]"

    def __init__(self, n_numbers: int = 64, length: int = 6, held_out: float = 0.1):
        if n_numbers < 2 or length < 2:
            raise ValueError(f"sorting: need n_numbers >= 2 and length >= 2, got {n_numbers}, {length}")
        super().__init__(held_out)
        self.n_numbers, self.length = n_numbers, length

    def symbols(self) -> list[str]:
        return [self.marker, "="] + [str(i) for i in range(self.n_numbers)]

    def sample(self, rng: random.Random) -> Item:
        numbers = [rng.randrange(self.n_numbers) for _ in range(self.length)]
        return self.item(" ".join(map(str, numbers)) + " =", " ".join(map(str, sorted(numbers))))


class Dyck(Task):
    """Complete a prefix of a well-nested sequence of k bracket types: the answer closes
    every open bracket, innermost first."""

    name, marker = "dyck", "[dyck]"

    def __init__(self, n_types: int = 2, length: int = 12, max_depth: int = 6, held_out: float = 0.1):
        if not 1 <= n_types <= len(BRACKETS) or length < 1 or max_depth < 1:
            raise ValueError(f"dyck: need 1 <= n_types <= {len(BRACKETS)}, length >= 1, max_depth >= 1")
        super().__init__(held_out)
        self.pairs, self.length, self.max_depth = BRACKETS[:n_types], length, max_depth

    def symbols(self) -> list[str]:
        return [self.marker, "="] + [c for pair in self.pairs for c in pair]

    def sample(self, rng: random.Random) -> Item:
        prefix, stack = [], []
        for _ in range(self.length):
            if not stack or (len(stack) < self.max_depth and rng.random() < 0.5):
                pair = rng.choice(self.pairs)
                prefix.append(pair[0])
                stack.append(pair[1])
            else:
                prefix.append(stack.pop())
        if not stack:  # ended balanced: open one more so that there is something to close
            pair = rng.choice(self.pairs)
            prefix.append(pair[0])
            stack.append(pair[1])
        return self.item(" ".join(prefix) + " =", " ".join(reversed(stack)), depth=len(stack))
