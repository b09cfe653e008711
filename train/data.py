"""Data: a corpus of packed token blocks (from the task suite or from real text), the
held-out probe items, and a step-indexed sampler.

Batches are a pure function of (seed, step): the data position saved for resume is the
step itself, so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import datasets
import lightning as L
import torch
from tokenizers import Tokenizer
from torch.utils.data import BatchSampler, DataLoader

from train.packing import PACK_BATCH, Corpus, pack
from train.tasks import make_task, split_weights
from train.text import build_text_corpus
from train.tokenizer import build_tokenizer


def build_corpus(data_cfg) -> Corpus:
    if data_cfg.kind == "text":
        return build_text_corpus(data_cfg)
    return build_task_corpus(data_cfg)


# ---- the task suite ------------------------------------------------------------------
def render(item: dict) -> dict:
    """An item as training text, with the character span of its answer (for answer-only loss)."""
    before = f"[BOS] {item['prompt']} "
    text = f"{before}{item['answer']} {item['suffix']} [EOS]"
    return {"text": text, "answer_start": len(before), "answer_end": len(before) + len(item["answer"])}


def _training_texts(tasks: dict, n_examples: int, seed: int) -> Iterator[dict]:
    """Generator for `datasets.Dataset.from_generator` (its arguments form the cache key):
    n examples, each from a task drawn with probability proportional to its weight; each
    keeps its item (as JSON) so that probe items can be taken from what training reads."""
    weights, params = split_weights(tasks)
    names = list(weights)
    streams = {n: make_task(n, **params[n]).training_items(random.Random(f"{n}-train-{seed}"), seed) for n in names}
    rng = random.Random(f"mixture-{seed}")
    for name in rng.choices(names, weights=[weights[n] for n in names], k=n_examples):
        item = next(streams[name])
        yield render(item) | {"item": json.dumps(item)}


def trained_items(texts: datasets.Dataset, tokenizer: Tokenizer, block_len: int, n: int) -> list[dict]:
    """Up to n distinct items per task from the start of the training stream, each one whose
    whole example lies inside one packed block: training reads it with all of its context.
    Follows the packing exactly (each PACK_BATCH of examples is concatenated and cut on its
    own, its remainder dropped)."""
    picked: dict[str, dict[str, dict]] = {}
    for start in range(0, len(texts), PACK_BATCH):
        chunk = texts[start : start + PACK_BATCH]
        lengths = [len(enc.ids) for enc in tokenizer.encode_batch(chunk["text"])]
        kept = sum(lengths) // block_len * block_len  # tokens of this chunk's whole blocks
        offset = 0
        for length, blob in zip(lengths, chunk["item"]):
            first, last = offset, offset + length - 1
            offset += length
            if last >= kept or first // block_len != last // block_len:
                continue
            item = json.loads(blob)
            by_key = picked.setdefault(item["task"], {})
            if len(by_key) < n:
                by_key.setdefault(item["prompt"], item)
        if picked and all(len(by_key) >= n for by_key in picked.values()):
            break
    return [item for by_key in picked.values() for item in by_key.values()]


def build_task_corpus(data_cfg) -> Corpus:
    weights, params = split_weights(data_cfg.tasks)
    tasks = {name: make_task(name, **params[name]) for name in weights}
    tokenizer = build_tokenizer([s for task in tasks.values() for s in task.symbols()])
    texts = datasets.Dataset.from_generator(
        _training_texts, cache_dir=data_cfg.cache_dir,
        gen_kwargs={"tasks": dict(data_cfg.tasks), "n_examples": data_cfg.train_examples, "seed": data_cfg.seed},
    )
    answer_only = data_cfg.loss_on == "answer"
    train = pack(texts, tokenizer, data_cfg.seq_len, "the training mixture", answer_only=answer_only)
    # items from the training stream, for train-vs-held-out curves (grokking)
    trained = trained_items(texts, tokenizer, data_cfg.seq_len + 1, data_cfg.probe_items)
    probe_items, heldout = [], {}
    for name, task in tasks.items():
        items = task.held_out_items(data_cfg.probe_items, data_cfg.seed)
        probe_items += [tokenize_item(item, tokenizer, "heldout") for item in items]
        probe_items += [tokenize_item(item, tokenizer, "train") for item in trained if item["task"] == name]
        rendered = datasets.Dataset.from_list([render(item) for item in items])
        heldout[name] = pack(rendered, tokenizer, data_cfg.seq_len, f"held-out {name} items", answer_only=answer_only)
    for name, spec in data_cfg.tasks.items():  # the linear probe's own items
        n = int(spec.get("linear_items", 0))
        probe_items += [tokenize_item(item, tokenizer, "linear") for item in tasks[name].items_anywhere(n, data_cfg.seed)]
    return Corpus(tokenizer, train, heldout, probe_items)


def tokenize_item(item: dict, tokenizer: Tokenizer, split: str) -> dict:
    """The uniform probe-item format the observatory reads: token ids plus the text.
    prompt_ids + answer_ids + suffix_ids is the example exactly as training renders it."""
    return {
        "task": item["task"],
        "split": split,  # "heldout": never trained on; "train": read by training; "linear": the linear probe's
        "prompt_ids": tokenizer.encode(f"[BOS] {item['prompt']}").ids,
        "answer_ids": tokenizer.encode(item["answer"]).ids,
        "suffix_ids": tokenizer.encode(f"{item['suffix']} [EOS]").ids,  # the rest of the training example
        "prompt": item["prompt"], "answer": item["answer"], "metadata": item["metadata"],
    }


# ---- batches ---------------------------------------------------------------------------
class StepBatchSampler:
    """Endless batches of dataset indices; batch k is a pure function of (seed, k).

    The index stream is a fresh permutation of the dataset per epoch. Under data
    parallelism each rank takes its own slice of the global batch."""

    def __init__(self, n_items: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0, world_size: int = 1):
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n_items, generator=generator)
        return self._perm

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n_items)
        return int(self._permutation(epoch)[offset])

    def batch(self, k: int) -> list[int]:
        global_batch = self.batch_size * self.world_size
        start = k * global_batch + self.rank * self.batch_size
        epoch, offset = divmod(start, self.n_items)
        if offset + self.batch_size <= self.n_items:  # within one epoch: one slice of its permutation
            return self._permutation(epoch)[offset : offset + self.batch_size].tolist()
        return [self._index(p) for p in range(start, start + self.batch_size)]

    def reads(self, n_batches: int) -> torch.Tensor:
        """(n_items,) how often each item is read in the first n_batches global batches (all
        ranks together): the epochs read whole, and the first items of the next permutation."""
        positions = n_batches * self.batch_size * self.world_size
        epochs, rest = divmod(positions, self.n_items)
        counts = torch.full((self.n_items,), epochs, dtype=torch.long)
        counts[self._permutation(epochs)[:rest]] += 1
        return counts

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


class InMemoryBlocks(torch.utils.data.Dataset):
    """The packed blocks as tensors; indexed by a whole batch of indices at once, so a batch
    costs one gather instead of a dataset lookup and a collate per block."""

    def __init__(self, blocks: datasets.Dataset):
        columns = blocks.with_format("torch")[:]
        self.input_ids = self._compact(columns["input_ids"])  # (N, seq_len + 1)
        self.labels = self._compact(columns["labels"]) if "labels" in columns else None

    @staticmethod
    def _compact(ids: torch.Tensor) -> torch.Tensor:
        return ids.to(torch.int32) if ids.max() < 2**31 else ids  # half the memory of int64

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, indices: list[int]) -> dict:
        input_ids = self.input_ids[indices].long()  # (B, seq_len + 1)
        # the targets: the tokens themselves, or the answer-only labels
        labels = input_ids if self.labels is None else self.labels[indices].long()
        return {"input_ids": input_ids, "labels": labels}


def batch_loader(blocks: InMemoryBlocks, sampler: StepBatchSampler, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """The sampler's batches of `blocks`: each sampler item is a whole batch's indices, fetched
    in one call (batch_size=None: no per-block collate)."""
    return DataLoader(blocks, sampler=sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)


class BlocksDataModule(L.LightningDataModule):
    def __init__(self, corpus: Corpus, batch_size: int, seed: int, val_batches: int, num_workers: int = 0):
        super().__init__()
        self.corpus, self.batch_size, self.seed = corpus, batch_size, seed
        self.val_batches, self.num_workers = val_batches, num_workers
        self.train_blocks: InMemoryBlocks | None = None  # built on first use, in the process that trains
        self.heldout_blocks: dict[str, InMemoryBlocks] | None = None

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if self.train_blocks is None:
            self.train_blocks = InMemoryBlocks(self.corpus.train)
        micro_batches_done = trainer.global_step * trainer.accumulate_grad_batches  # the data position
        sampler = StepBatchSampler(len(self.train_blocks), self.batch_size, self.seed, start_batch=micro_batches_done,
                                   rank=trainer.global_rank, world_size=trainer.world_size)
        return batch_loader(self.train_blocks, sampler, self.num_workers,
                            pin_memory=trainer.strategy.root_device.type == "cuda")

    def heldout_dataloaders(self) -> dict[str, DataLoader]:
        """Fixed held-out blocks per task, scored at every checkpoint (not a Lightning val
        loop: checkpoints fall on a log-spaced schedule that val_check_interval cannot express)."""
        global_batch = self.batch_size * (self.trainer.world_size if self.trainer else 1)  # same set on any ranks
        if self.heldout_blocks is None:  # in memory once: every checkpoint reads them again
            self.heldout_blocks = {name: InMemoryBlocks(blocks.select(range(min(len(blocks), self.val_batches * global_batch))))
                                   for name, blocks in self.corpus.heldout.items()}
        return {name: DataLoader(blocks, batch_size=None, sampler=BatchSampler(range(len(blocks)), global_batch, False))
                for name, blocks in self.heldout_blocks.items()}
