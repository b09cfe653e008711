"""Real text: local .txt / .jsonl / .parquet files (or a hub dataset when online), a
byte-level BPE tokenizer trained with `tokenizers`, and multiprocess packing with
`datasets.map`. Both the tokenizer and the packed blocks are cached, keyed by the corpus
fingerprint, so a second run neither retrains nor re-tokenizes."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from train.config import TEXT_FORMATS
from train.packing import Corpus, DataError, pack
from train.tokenizer import SPECIAL_TOKENS


def load_documents(data_cfg) -> datasets.Dataset:
    if data_cfg.files:
        suffixes = {Path(f).suffix for f in data_cfg.files}
        if len(suffixes) != 1:
            raise DataError(f"data.files mixes formats {sorted(suffixes)}; use one format per run")
        builder = TEXT_FORMATS[suffixes.pop()]
        docs = datasets.load_dataset(builder, data_files=[str(f) for f in data_cfg.files], split="train",
                                     cache_dir=data_cfg.cache_dir)
    else:
        docs = datasets.load_dataset(data_cfg.hub, split="train", cache_dir=data_cfg.cache_dir)
    if data_cfg.text_column not in docs.column_names:
        raise DataError(f"the corpus has no column {data_cfg.text_column!r} (columns: {docs.column_names}); "
                         "set data.text_column")
    docs = docs.select_columns([data_cfg.text_column])
    if data_cfg.text_column != "text":
        docs = docs.rename_column(data_cfg.text_column, "text")
    docs = docs.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
    if len(docs) < 2:
        raise DataError(f"the corpus has {len(docs)} non-empty document(s); text training needs at least 2")
    return docs


def train_bpe(docs: datasets.Dataset, vocab_size: int, cache_dir: Path) -> Tokenizer:
    path = cache_dir / f"bpe-{docs._fingerprint}-{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator((batch["text"] for batch in docs.iter(batch_size=1000)), trainer=trainer)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tokenizer.save(str(tmp))
    os.replace(tmp, path)
    return tokenizer


def build_text_corpus(data_cfg) -> Corpus:
    docs = load_documents(data_cfg)
    split = docs.train_test_split(test_size=data_cfg.val_fraction, seed=data_cfg.seed)
    cache = Path(data_cfg.cache_dir or datasets.config.HF_DATASETS_CACHE) / "observatory-tokenizers"
    tokenizer = train_bpe(split["train"], data_cfg.vocab_size, cache)
    bos_eos = lambda batch: {"text": [f"[BOS]{t}[EOS]" for t in batch["text"]]}  # noqa: E731
    train, val = (split[s].map(bos_eos, batched=True) for s in ("train", "test"))
    num_proc = data_cfg.num_proc if len(train) >= 1000 * (data_cfg.num_proc or 1) else None
    return Corpus(
        tokenizer=tokenizer,
        train=pack(train, tokenizer, data_cfg.seq_len, "the training text", num_proc=num_proc),
        heldout={"text": pack(val, tokenizer, data_cfg.seq_len, "the held-out text")},
        probe_items=[],
    )
