"""Data: a word-level `tokenizers` vocabulary, `datasets` pipelines that render, tokenize
and pack task examples into fixed-length blocks, and a step-indexed sampler.

Batches are a pure function of (seed, step): the data position saved for resume is the
step itself, so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import datasets
import lightning as L
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from torch.utils.data import DataLoader

from train.tasks import make_task

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]


def build_tokenizer(symbols: list[str]) -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(set(symbols) - set(SPECIAL_TOKENS)))}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return tokenizer


def _task_examples(tasks: dict, split: str, seed: int) -> Iterator[dict]:
    """Generator for `datasets.Dataset.from_generator` (its arguments form the cache key)."""
    for name, params in tasks.items():
        yield from make_task(name, **params).examples(split, seed)


def _render(batch: dict) -> dict:
    return {"text": [f"[BOS] {p} {a} [EOS]" for p, a in zip(batch["prompt"], batch["answer"])]}


def _tokenize_and_pack(batch: dict, tokenizer: Tokenizer, block_len: int) -> dict:
    """Concatenate the batch's examples and cut the stream into blocks of block_len tokens."""
    stream = [tok for enc in tokenizer.encode_batch(batch["text"]) for tok in enc.ids]
    n_blocks = len(stream) // block_len
    return {"input_ids": [stream[i * block_len : (i + 1) * block_len] for i in range(n_blocks)]}


def build_split(tasks: dict, split: str, seed: int, tokenizer: Tokenizer, seq_len: int, cache_dir: str | None):
    """Packed blocks of seq_len + 1 tokens (inputs and shifted targets) for one split."""
    examples = datasets.Dataset.from_generator(
        _task_examples, gen_kwargs={"tasks": tasks, "split": split, "seed": seed}, cache_dir=cache_dir
    )
    texts = examples.map(_render, batched=True, remove_columns=examples.column_names)
    packed = texts.map(
        _tokenize_and_pack,
        batched=True,
        remove_columns=["text"],
        fn_kwargs={"tokenizer": tokenizer, "block_len": seq_len + 1},
    )
    if len(packed) == 0:
        raise ValueError(f"the {split} split packs into no block of {seq_len + 1} tokens; lower data.seq_len")
    return packed.with_format("torch")


class StepBatchSampler:
    """Endless batches of dataset indices; batch k is a pure function of (seed, k).

    The index stream is a fresh permutation of the dataset per epoch. Under data
    parallelism each rank takes its own slice of the global batch."""

    def __init__(self, n_items: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0, world_size: int = 1):
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n_items)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n_items, generator=generator)
        return int(self._perm[offset])

    def batch(self, k: int) -> list[int]:
        global_batch = self.batch_size * self.world_size
        start = k * global_batch + self.rank * self.batch_size
        return [self._index(p) for p in range(start, start + self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


class TaskDataModule(L.LightningDataModule):
    def __init__(self, tasks: dict, seq_len: int, batch_size: int, seed: int, data_seed: int,
                 val_batches: int, num_workers: int = 0, cache_dir: str | None = None):
        super().__init__()
        self.tasks, self.seq_len, self.batch_size = dict(tasks), seq_len, batch_size
        self.seed, self.data_seed, self.val_batches = seed, data_seed, val_batches
        self.num_workers, self.cache_dir = num_workers, cache_dir
        symbols = [s for name, params in self.tasks.items() for s in make_task(name, **params).symbols()]
        self.tokenizer = build_tokenizer(symbols)
        self.train_set = self.val_set = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def save_tokenizer(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            args = dict(seed=self.data_seed, tokenizer=self.tokenizer, seq_len=self.seq_len, cache_dir=self.cache_dir)
            self.train_set = build_split(self.tasks, "train", **args)
            self.val_set = build_split(self.tasks, "val", **args)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        micro_batches_done = trainer.global_step * trainer.accumulate_grad_batches  # the data position
        sampler = StepBatchSampler(len(self.train_set), self.batch_size, self.seed, start_batch=micro_batches_done,
                                   rank=trainer.global_rank, world_size=trainer.world_size)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers)

    def heldout_dataloader(self) -> DataLoader:
        """A fixed slice of the held-out split, scored at every checkpoint (not a Lightning
        val loop: checkpoints fall on a log-spaced schedule that val_check_interval cannot express)."""
        n = min(len(self.val_set), self.val_batches * self.batch_size)
        return DataLoader(self.val_set.select(range(n)), batch_size=self.batch_size, shuffle=False)
