"""Sequence tasks: induction (repeated random tokens), associative recall, sorting, Dyck."""

from __future__ import annotations

import random

from train.tasks.base import Item, Task

BRACKETS = ["()", "[]", "{}", "<>"]


class Induction(Task):
    """Random symbols in which earlier spans recur at random offsets, with no marker and no
    separator: a recurring span is predictable only by matching content, by an induction head
    (Olsson et al. 2022). The body of `length` symbols is written left to right in segments:
    with probability `p_copy` (once one fits) a copy of span_min..span_max symbols from a
    random earlier position, else a fresh run of fresh_min..fresh_max symbols. Fresh symbols
    follow a lag-2 Markov chain (each depends on the one two back through a fixed random
    table, rows Dirichlet(lag2_alpha) mixed with `lag2_uniform` of uniform), which makes a
    previous-token head useful on its own before an induction head can use it. The answer is
    the rest of the last copy whose first symbol occurs once before it, after that first
    symbol: the prompt decides it (continue what followed the one earlier occurrence).
    Requiring that of every copy in the training data instead stopped induction heads from
    forming: a previous-token head formed (0.9) and no induction head within 800 steps,
    against one at step ~400 without it."""

    name, marker = "induction", "[copy]"

    def __init__(self, n_symbols: int = 64, length: int = 62, span_min: int = 4, span_max: int = 10,
                 fresh_min: int = 2, fresh_max: int = 8, p_copy: float = 0.5, lag2_alpha: float = 0.1,
                 lag2_uniform: float = 0.5, held_out: float = 0.1):
        if n_symbols < 2 or not 2 <= span_min <= span_max or not 1 <= fresh_min <= fresh_max or length < span_min + 2:
            raise ValueError(f"induction: need n_symbols >= 2, 2 <= span_min <= span_max, 1 <= fresh_min <= fresh_max "
                             f"and length >= span_min + 2, got {n_symbols}, {span_min}, {span_max}, {fresh_min}, "
                             f"{fresh_max}, {length}")
        if not 0 < p_copy <= 1 or lag2_alpha <= 0 or not 0 <= lag2_uniform <= 1:
            raise ValueError(f"induction: need 0 < p_copy <= 1, lag2_alpha > 0, 0 <= lag2_uniform <= 1, got "
                             f"{p_copy}, {lag2_alpha}, {lag2_uniform}")
        super().__init__(held_out)
        self.n_symbols, self.length, self.p_copy = n_symbols, length, p_copy
        self.spans, self.fresh = (span_min, span_max), (fresh_min, fresh_max)
        self.lag2 = self._lag2_table(n_symbols, lag2_alpha, lag2_uniform)

    @staticmethod
    def _lag2_table(n: int, alpha: float, uniform: float) -> list[list[float]]:
        """Cumulative transition weights, one row per symbol two back; fixed for the task."""
        rng, table = random.Random(f"induction-lag2-{n}-{alpha}-{uniform}"), []
        for _ in range(n):
            row = [rng.gammavariate(alpha, 1.0) for _ in range(n)]
            total, cumulative, rows = sum(row), 0.0, []
            for weight in row:
                cumulative += (1 - uniform) * weight / total + uniform / n
                rows.append(cumulative)
            table.append(rows)
        return table

    def symbols(self) -> list[str]:
        return [self.marker] + [f"r{i}" for i in range(self.n_symbols)]

    def _body(self, rng: random.Random) -> tuple[list[int], list[tuple[int, int, bool]]]:
        """`length` symbols and every copied span in them: (start, length, whether its first
        symbol occurred exactly once before it)."""
        body, copies, counts = [], [], [0] * self.n_symbols
        while len(body) < self.length:
            m = rng.randint(*self.spans)
            if len(body) >= m and rng.random() < self.p_copy:
                s = rng.randrange(len(body) - m + 1)
                copies.append((len(body), min(m, self.length - len(body)), counts[body[s]] == 1))
                segment = body[s : s + m]
            else:
                segment = []
                for _ in range(rng.randint(*self.fresh)):
                    previous = (body + segment)[-2] if len(body) + len(segment) >= 2 else rng.randrange(self.n_symbols)
                    segment.append(rng.choices(range(self.n_symbols), cum_weights=self.lag2[previous])[0])
            for symbol in segment[: self.length - len(body)]:
                counts[symbol] += 1
                body.append(symbol)
        return body, copies

    def sample(self, rng: random.Random) -> Item:
        while True:
            body, copies = self._body(rng)
            copies = [(d, m) for d, m, unique in copies if m >= 2 and unique]
            if copies:
                break
        d, m = copies[-1]
        words = [f"r{i}" for i in body]
        return self.item(" ".join(words[: d + 1]), " ".join(words[d + 1 : d + m]), " ".join(words[d + m :]),
                         copy_start=d, copy_length=m)


class AssociativeRecall(Task):
    """Key-value pairs, then queries: each earlier query is answered in the prompt and the
    last one is the answer (multi-query associative recall, Arora et al. 2023)."""

    name, marker = "associative_recall", "[recall]"

    def __init__(self, n_keys: int = 32, n_values: int = 32, n_pairs: int = 6, n_queries: int = 3,
                 held_out: float = 0.1):
        if not 1 <= n_pairs <= n_keys or n_queries < 1:
            raise ValueError("associative_recall: need 1 <= n_pairs <= n_keys and n_queries >= 1")
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
