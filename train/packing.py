"""Packing: examples are concatenated into one token stream and cut into blocks of
seq_len + 1 tokens, as GPT pre-training does; and the Corpus of packed blocks that both
data sources (the task suite in train/data.py, real text in train/text.py) make."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
from tokenizers import Tokenizer

from train.model import IGNORE_INDEX

PACK_BATCH = 1000  # examples packed together: each batch is concatenated and cut into blocks on its own


class DataError(ValueError):
    """The data cannot make a training set (an empty corpus, too little text for one block)."""


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: datasets.Dataset  # packed blocks of seq_len + 1 tokens ("input_ids"; "labels" for answer-only loss)
    heldout: dict[str, datasets.Dataset]  # packed held-out blocks per task ("text" for real text)
    probe_items: list[dict]  # held-out and training-part items with token ids (empty for real text)


def tokenize_and_pack(batch: dict, tokenizer: Tokenizer, block_len: int, answer_only: bool = False) -> dict:
    """Concatenate the batch's texts and cut the token stream into blocks of block_len.
    answer_only: also "labels", the same tokens with every one outside an answer span set
    to IGNORE_INDEX (the Hugging Face convention), so only answers are trained on."""
    encodings = tokenizer.encode_batch(batch["text"])
    blocks = {"input_ids": _cut([tok for enc in encodings for tok in enc.ids], block_len)}
    if answer_only:
        spans = zip(encodings, batch["answer_start"], batch["answer_end"])
        labels = [tok if start <= first_char < end else IGNORE_INDEX
                  for enc, start, end in spans for tok, (first_char, _) in zip(enc.ids, enc.offsets)]
        bos = tokenizer.token_to_id("[BOS]")
        blocks["labels"] = [_from_first_example(block_labels, block, bos)
                            for block_labels, block in zip(_cut(labels, block_len), blocks["input_ids"])]
    return blocks


def _cut(stream: list[int], block_len: int) -> list[list[int]]:
    """Whole blocks of block_len; the remainder is dropped."""
    return [stream[i : i + block_len] for i in range(0, len(stream) - block_len + 1, block_len)]


def _from_first_example(labels: list[int], block: list[int], bos: int) -> list[int]:
    """Ignore the answer of an example cut by the block's start: its prompt is in another block."""
    first = block.index(bos) if bos in block else len(block)
    return [IGNORE_INDEX] * first + labels[first:]


def pack(texts: datasets.Dataset, tokenizer: Tokenizer, seq_len: int, what: str, num_proc: int | None = None,
         answer_only: bool = False):
    packed = texts.map(tokenize_and_pack, batched=True, batch_size=PACK_BATCH, remove_columns=texts.column_names,
                       num_proc=num_proc,
                       fn_kwargs={"tokenizer": tokenizer, "block_len": seq_len + 1, "answer_only": answer_only},
                       desc=f"packing {what}")
    if len(packed) == 0:
        raise DataError(f"{what} packs into no block of {seq_len + 1} tokens; lower data.seq_len or add data")
    return packed.with_format("torch")
