"""The task suite's tokenizer: one word-level token per symbol, after the special tokens that
every run's tokenizer (this one, and the BPE of train/text.py) gives ids 0-3."""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]  # ids 0-3 of every run's tokenizer


def build_tokenizer(symbols: list[str]) -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(set(symbols) - set(SPECIAL_TOKENS)))}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return tokenizer
