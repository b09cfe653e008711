"""What every task shares: items, the held-out split, and sampling."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

Item = dict  # {"task", "prompt", "answer", "suffix", "metadata"}: space-separated symbols


def unit_hash(*parts) -> float:
    """A stable pseudo-random number in [0, 1) for a tuple of values (same in every process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class Task:
    """A task samples items from its item space; a fixed hash of each item's key puts it
    either in the training part or in the held-out part, so the two are disjoint by
    construction whatever the sampling."""

    name: str = ""
    marker: str = ""  # first prompt token, tells the model which task it is in a mixture

    def __init__(self, held_out: float = 0.1):
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"{self.name}: held_out must be in (0, 1), got {held_out}")
        self.held_out = held_out

    def symbols(self) -> list[str]:
        raise NotImplementedError

    def sample(self, rng: random.Random) -> Item:
        raise NotImplementedError

    def key(self, item: Item) -> str:
        return item["prompt"]

    def is_held_out(self, item: Item, seed: int) -> bool:
        return unit_hash(self.name, seed, self.key(item)) < self.held_out

    def item(self, prompt: str, answer: str, suffix: str = "", **metadata) -> Item:
        return {"task": self.name, "prompt": f"{self.marker} {prompt}", "answer": answer, "suffix": suffix,
                "metadata": metadata}

    def training_items(self, rng: random.Random, seed: int) -> Iterator[Item]:
        """Endless items from the training part."""
        while True:
            item = self.sample(rng)
            if not self.is_held_out(item, seed):
                yield item

    def items_anywhere(self, n: int, seed: int) -> list[Item]:
        """Up to n distinct items from the whole item space, training part and held-out part
        alike (the linear probe's: it asks what the model represents, not what it generalizes)."""
        return self._distinct(random.Random(f"{self.name}-anywhere-{seed}"), n, lambda item: True)

    def held_out_items(self, n: int, seed: int) -> list[Item]:
        """Up to n distinct held-out items (fewer if the held-out part is smaller)."""
        return self._distinct(random.Random(f"{self.name}-held-out-{seed}"), n, lambda item: self.is_held_out(item, seed))

    def _distinct(self, rng: random.Random, n: int, keep) -> list[Item]:
        items, seen, misses = [], set(), 0
        while len(items) < n and misses < 20 * n + 1000:  # stop once new items stop coming
            item = self.sample(rng)
            if keep(item) and self.key(item) not in seen:
                seen.add(self.key(item))
                items.append(item)
                misses = 0
            else:
                misses += 1
        return items
