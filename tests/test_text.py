"""Real text: local files, a BPE tokenizer saved with the run, cached tokenization."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from train import rundir
from train.config import ConfigError
from train.data import build_corpus
from train.runner import run_training


def write_corpus(path, n_docs=400):
    """Repetitive English-like text, so that a tiny model's loss visibly falls."""
    subjects, verbs, objects = ["the cat", "a dog", "my teacher", "the old farmer"], ["sees", "likes", "follows"], \
        ["the bird", "a horse", "the red ball", "my friend"]
    docs = [f"{subjects[i % 4]} {verbs[i % 3]} {objects[(i * 7) % 4]}. it is day {i % 10}." for i in range(n_docs)]
    path.write_text("\n".join(docs) + "\n")
    return docs


TEXT = ["data=text", "data.vocab_size=300", "data.val_fraction=0.1"]  # after debug=default (compose_debug)


def test_trains_from_a_local_text_file(compose_debug, tmp_path):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus)
    run_dir = run_training(compose_debug(*TEXT, f"data.files=[{corpus}]"))
    rows = rundir.read_manifest(run_dir)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 1.0 and list(rows[-1]["val_loss_by_task"]) == ["text"]
    tokenizer = Tokenizer.from_file(str(run_dir / rundir.TOKENIZER))
    assert tokenizer.get_vocab_size() == 300
    assert tokenizer.decode(tokenizer.encode("the cat sees a horse.").ids) == "the cat sees a horse."
    documents = rundir.read_probe_items(run_dir)  # all 40 held-out documents, whole (debug=default asks for 64)
    assert len(documents) == 40 and all(d["task"] is None and d["split"] == "heldout" for d in documents)
    ids = documents[0]["suffix_ids"]  # the document as training renders it: [BOS] text [EOS]
    assert (ids[0], ids[-1]) == (tokenizer.token_to_id("[BOS]"), tokenizer.token_to_id("[EOS]"))


def test_held_out_documents_pack_into_the_blocks_training_holds_out(compose_debug, tmp_path):
    """The observatory's held-out blocks, packed from probe_items.jsonl, are the held-out blocks
    training scores (the same tokens, cut the same way)."""
    from observatory.probes.context import pack_with_loss_mask
    from train.text import build_text_corpus

    write_corpus(tmp_path / "corpus.txt")
    cfg = compose_debug(*TEXT, f"data.files=[{tmp_path / 'corpus.txt'}]", "data.probe_items=1000")
    corpus = build_text_corpus(cfg.data)
    blocks, tasks, _ = pack_with_loss_mask(corpus.probe_items, cfg.data.seq_len + 1)
    assert blocks.tolist() == corpus.heldout["text"][:]["input_ids"].tolist() and set(tasks) == {None}


def test_the_bundled_bible_is_read_through_datasets_one_chapter_a_document(tmp_path):
    from omegaconf import OmegaConf

    from train.text import load_documents

    cfg = OmegaConf.create({"bundled": "kjv", "files": [], "hub": None, "text_column": "text",
                            "cache_dir": str(tmp_path)})
    docs = load_documents(cfg)
    assert len(docs) == 1189  # the chapters of the 66 books
    assert docs[0]["text"].startswith("In the beginning God created the heaven and the earth.")
    assert docs[-1]["text"].endswith("The grace of our Lord Jesus Christ be with you all. Amen.")


def test_second_build_reuses_the_cached_tokenization(compose_debug, tmp_path):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, n_docs=2400)  # enough documents for 2 tokenizer processes
    cfg = compose_debug(*TEXT, f"data.files=[{corpus}]", f"data.cache_dir={tmp_path / 'cache'}")
    first = build_corpus(cfg.data)
    files = {f["filename"] for f in first.train.cache_files}
    stamps = {f: (tmp_path / f).stat().st_mtime_ns for f in files}
    second = build_corpus(cfg.data)
    assert len(files) == 2  # one cache shard per process
    assert {f["filename"] for f in second.train.cache_files} == files  # same cache files, not rewritten
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in files} == stamps
    assert second.train[:]["input_ids"].tolist() == first.train[:]["input_ids"].tolist()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_jsonl_and_parquet_corpora(compose_debug, tmp_path, suffix):
    docs = write_corpus(tmp_path / "tmp.txt")
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    else:
        pq.write_table(pa.table({"body": docs}), path)
    corpus = build_corpus(compose_debug(*TEXT, f"data.files=[{path}]", "data.text_column=body").data)
    # the same documents from a .txt file: the same tokenizer, the same training and held-out blocks
    plain = build_corpus(compose_debug(*TEXT, f"data.files=[{tmp_path / 'tmp.txt'}]").data)
    assert corpus.tokenizer.get_vocab() == plain.tokenizer.get_vocab()
    assert len(corpus.train) > 10 and corpus.train[:]["input_ids"].tolist() == plain.train[:]["input_ids"].tolist()
    assert len(corpus.heldout["text"]) > 0
    assert corpus.heldout["text"][:]["input_ids"].tolist() == plain.heldout["text"][:]["input_ids"].tolist()


def test_missing_file_and_empty_corpus_are_clear_errors(compose_debug, tmp_path):
    with pytest.raises(ConfigError, match=r"data.files: .*nowhere.txt matches no file"):
        run_training(compose_debug(*TEXT, f"data.files=[{tmp_path}/nowhere.txt]"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(ConfigError, match="the corpus has 0 non-empty document"):
        run_training(compose_debug(*TEXT, f"data.files=[{empty}]"))
    with pytest.raises(ConfigError, match="data=text needs one source"):
        run_training(compose_debug(*TEXT))
    with pytest.raises(ConfigError, match="it has data.files and data.bundled"):
        run_training(compose_debug(*TEXT, f"data.files=[{empty}]", "data.bundled=kjv"))
    with pytest.raises(ConfigError, match="data.bundled='gutenberg' is not a bundled corpus; there are: kjv"):
        run_training(compose_debug(*TEXT, "data.bundled=gutenberg"))


def test_a_text_runs_documents_are_read_in_windows_of_the_context():
    """Each held-out document cut into consecutive windows of n_ctx + 1 tokens, each read from
    position 0 (the rest dropped); with fewer than 16 windows, the 16 longest documents cut to
    the shortest of them. A task's items are never cut into windows."""
    from observatory.probes.context import documents
    from train.text import document_item

    docs = [document_item(list(range(100 * d, 100 * d + n))) for d, n in enumerate([25, 10, 31] * 6)]
    windows = documents(docs, 10)
    assert windows.shape == (6 * (2 + 1 + 3), 10) and windows[0].tolist() == list(range(10))
    assert windows[1].tolist() == list(range(10, 20)) and windows[2].tolist() == list(range(100, 110))
    short = documents(docs[:16], 40)  # no document fills 40: the 16 longest, cut to the shortest (10)
    assert short.shape == (16, 10)
    task = [{"task": "copy", "split": "heldout", "prompt_ids": list(range(25)), "answer_ids": [], "suffix_ids": []}]
    assert documents(task, 10).shape == (1, 10)
