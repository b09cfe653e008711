"""A Hugging Face hub cache written by hand, laid out as huggingface_hub lays it out, for the
offline hub tests: <cache>/models--org--name/{blobs/<etag>, snapshots/<commit>/<file> ->
../../blobs/<etag>, refs/<branch> (the commit, no newline)}. A weight file's blob is named by
its sha256 (the hub's LFS oid), any other file's by its git blob sha1, as the hub names them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

LFS = (".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish(cache: Path, repo: str, branch: str, folder: Path, absent: tuple[str, ...] = ()) -> str:
    """Every file of `folder` as the revision `branch` of `repo` in the cache; its commit hash.
    `absent`: files that the revision lacks and a download has asked for, which the hub's
    cache records as empty .no_exist/<commit>/<file> markers (transformers asks a tokenizer-only
    repository for config.json: offline, without the marker it cannot tell absent from not
    downloaded)."""
    repo_dir = Path(cache) / ("models--" + repo.replace("/", "--"))
    files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
    commit = hashlib.sha1(f"{repo}@{branch}".encode() + b"".join(files.values())).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest() if name.endswith(LFS) else git_blob_sha1(data)
        blob = repo_dir / "blobs" / etag
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / name
        if not link.is_symlink():
            os.symlink(Path("..") / ".." / "blobs" / etag, link)
    for name in absent:
        marker = repo_dir / ".no_exist" / commit / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / branch).write_text(commit)
    return commit


def word_tokenizer(folder: Path, n_words: int = 60):
    """A fast tokenizer of n_words words "w0".."w{n-1}" after <|endoftext|> (id 0: beginning of
    text, as in Pythia), saved as the hub's repositories hold theirs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i + 1 for i in range(n_words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def tiny_model(architecture: str, vocab_size: int, seed: int, n_ctx: int = 64):
    """A random GPT-NeoX (Pythia's parallel residual), Llama or GPT-2 of 2 layers, 4 heads."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if architecture == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=n_ctx, bos_token_id=0, eos_token_id=0)
        return GPTNeoXForCausalLM(cfg)
    if architecture == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, intermediate_size=64, max_position_embeddings=n_ctx, bos_token_id=0,
                          eos_token_id=0)
        return LlamaForCausalLM(cfg)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=n_ctx, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def publish_model(cache: Path, repo: str, branch: str, model, tokenizer_folder: Path | None = None) -> str:
    """A model (and the tokenizer's files) as one revision."""
    import shutil

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        if tokenizer_folder is not None:
            for p in Path(tokenizer_folder).iterdir():
                shutil.copy(p, folder)
        return publish(cache, repo, branch, Path(folder))
