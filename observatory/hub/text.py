"""`hub.text`: the text the loss and essential-dynamics probes read on a hub model, through
training's own reader (train/text.py: a bundled corpus, local .txt/.jsonl/.parquet files, or a
hub dataset), tokenized with the repository's tokenizer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from train.text import BUNDLED, load_documents


def text_config(text: str | list[str]):
    """training's data config for `hub.text`: a bundled corpus's name, file paths, or a hub dataset."""
    files = [text] if isinstance(text, str) else list(text)
    if isinstance(text, str) and text in BUNDLED:
        return OmegaConf.create({"bundled": text, "files": None, "hub": None, "text_column": "text", "cache_dir": None})
    if all(Path(f).exists() for f in files):
        return OmegaConf.create({"bundled": None, "files": files, "hub": None, "text_column": "text", "cache_dir": None})
    if isinstance(text, str) and "/" in text and not Path(text).suffix:
        return OmegaConf.create({"bundled": None, "files": None, "hub": text, "text_column": "text", "cache_dir": None})
    missing = [f for f in files if not Path(f).exists()]
    raise FileNotFoundError(f"hub.text: {missing} do not exist; give .txt/.jsonl/.parquet files, a bundled corpus "
                            f"({', '.join(BUNDLED)}) or a hub dataset (org/name)")


def split_text(text: str | list[str], tokenizer, max_tokens: int, stream_tokens: int,
               separator: int) -> tuple[list[list[int]], list[int]]:
    """(held-out documents, the stream after them): the first documents' token ids, `max_tokens`
    in all (the last one cut), which the probes read; then the next `stream_tokens` tokens, the
    documents joined by `separator` (end of text, as Pythia's training packs them), whose n-grams
    the ngram probe compares the model with. Capped by tokens, not documents: a probe keeps the
    logits of every token it reads, 4 bytes per token and vocabulary entry (Pythia's 50,304:
    200 kB a token)."""
    heldout, stream, total = [], [], 0
    for doc in load_documents(text_config(text)):
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        if total < max_tokens:
            heldout.append(ids[: max_tokens - total])
            total += len(heldout[-1])
        elif len(stream) < stream_tokens:
            stream += [separator, *ids][: stream_tokens - len(stream)]
        else:
            break
    return heldout, stream
