import datasets
import pytest
import torch

from train.data import InMemoryBlocks, StepBatchSampler, build_corpus
from train.model import IGNORE_INDEX
from train.packing import pack
from train.tasks import make_task
from train.tokenizer import SPECIAL_TOKENS, build_tokenizer


def test_tokenizer_round_trip():
    tokenizer = build_tokenizer(make_task("modular_addition", p=13).symbols())
    assert tokenizer.get_vocab_size() == len(SPECIAL_TOKENS) + 3 + 13
    ids = tokenizer.encode("[BOS] [mod] 12 + 3 = 2 [EOS]").ids
    assert ids[0] == SPECIAL_TOKENS.index("[BOS]") and SPECIAL_TOKENS.index("[UNK]") not in ids
    assert tokenizer.decode(ids, skip_special_tokens=False).split() == ["[BOS]", "[mod]", "12", "+", "3", "=", "2", "[EOS]"]


def test_mixture_corpus_is_deterministic_and_keeps_held_out_items_out(compose_train, tmp_path):
    cfg = compose_train("data.train_examples=3000", "data.probe_items=32", "data.seq_len=32", "model.n_ctx=32")
    cfg.data.cache_dir = str(tmp_path / "a")
    a = build_corpus(cfg.data)
    cfg.data.cache_dir = str(tmp_path / "b")
    b = build_corpus(cfg.data)
    blocks = a.train[:]["input_ids"]
    assert torch.equal(blocks, b.train[:]["input_ids"]) and blocks.shape[1] == 33
    assert a.probe_items == b.probe_items and sorted(a.heldout) == sorted(cfg.data.tasks)

    text = a.tokenizer.decode(blocks.flatten().tolist(), skip_special_tokens=False)
    examples = [e.strip() for e in text.split("[BOS]")[1:-1]]
    counts = {name: sum(e.startswith(make_task(name).marker) for e in examples) for name in cfg.data.tasks}
    assert all(c > 0.1 * len(examples) for c in counts.values()), counts  # equal weights: ~1/7 each
    assert sum(not e.endswith("[EOS]") for e in examples) <= 3  # remainders cut at the 3 map batches
    # a held-out prompt followed by its answer never occurs in the training stream
    heldout = [item for item in a.probe_items if item["split"] == "heldout"]
    splits = [item["split"] for item in a.probe_items]
    assert len(heldout) == splits.count("train") == 7 * 32  # and as many from the training stream
    linear = [item for item in a.probe_items if item["split"] == "linear"]  # the linear probe's own items
    assert len(linear) == 4096 and {item["task"] for item in linear} == {"modular_addition"}
    assert len({item["answer"] for item in linear[:3072]}) == 113  # every sum among the items it fits on
    for item in heldout:
        if item["task"] != "grammar":  # grammar prompts are split by prefix; checked in test_tasks
            assert f"{item['prompt']} {item['answer']} " not in text
    # probe items round-trip through the tokenizer
    item = a.probe_items[0]
    assert a.tokenizer.decode(item["prompt_ids"], skip_special_tokens=False) == f"[BOS] {item['prompt']}"
    assert a.tokenizer.decode(item["answer_ids"]) == item["answer"]
    for item in a.probe_items:  # the three parts make up the example exactly as training renders it
        full = item["prompt_ids"] + item["answer_ids"] + item["suffix_ids"]
        text = a.tokenizer.decode(full, skip_special_tokens=False)
        assert text.startswith(f"[BOS] {item['prompt']} {item['answer']}") and text.endswith("[EOS]")


def test_training_split_probe_items_are_whole_examples_of_the_blocks_training_reads(compose_train, tmp_path):
    steps, batch = 300, 16
    cfg = compose_train("data.train_examples=3000", "data.probe_items=32", "data.seq_len=32", "model.n_ctx=32",
                        f"data.cache_dir={tmp_path}", f"data.batch_size={batch}")
    corpus = build_corpus(cfg.data)
    blocks = corpus.train[:]["input_ids"]
    sampler = StepBatchSampler(len(blocks), batch, cfg.seed)
    read = {i for k in range(steps) for i in sampler.batch(k)}  # the blocks a run of `steps` steps reads
    assert len(read) == len(blocks)
    streams = [f" {' '.join(map(str, block.tolist()))} " for block in blocks]
    trained = [item for item in corpus.probe_items if item["split"] == "train"]
    assert {item["task"] for item in trained} == set(cfg.data.tasks) and len(trained) == 7 * 32
    assert len({(item["task"], item["prompt"]) for item in trained}) == len(trained)  # distinct
    for item in trained:  # the whole example, [BOS] to [EOS], inside one block
        example = f" {' '.join(map(str, item['prompt_ids'] + item['answer_ids'] + item['suffix_ids']))} "
        assert any(example in stream for stream in streams), item


def test_weights_set_the_mixture(compose_train, tmp_path):
    cfg = compose_train("data.train_examples=2000", "data.tasks.sorting.weight=0", "data.tasks.grammar.weight=5",
                        f"data.cache_dir={tmp_path}")
    corpus = build_corpus(cfg.data)
    text = corpus.tokenizer.decode(corpus.train[:]["input_ids"].flatten().tolist(), skip_special_tokens=False)
    assert text.count("[sort]") == 0 and text.count("[lm]") > 2 * text.count("[copy]")


def test_answer_only_labels_keep_exactly_the_answers(compose_train, tmp_path):
    cfg = compose_train("data=modular_addition", "data.tasks.modular_addition.p=23", "data.train_examples=500",
                        "data.probe_items=32", "data.loss_on=answer", f"data.cache_dir={tmp_path}")
    corpus = build_corpus(cfg.data)
    for blocks in [corpus.train, corpus.heldout["modular_addition"]]:
        batch = InMemoryBlocks(blocks)[list(range(len(blocks)))]
        ids, labels = batch["input_ids"], batch["labels"]
        kept = labels != IGNORE_INDEX
        assert torch.equal(labels[kept], ids[kept])
        tokens = [[corpus.tokenizer.id_to_token(i) for i in row] for row in ids.tolist()]
        for row, keep in zip(tokens, kept.tolist()):
            # kept: every token right after "=" whose example starts in this block, nothing else ...
            first = row.index("[BOS]")
            assert keep == [i > first and row[i - 1] == "=" for i in range(len(row))]
            # ... and each is the sum, computed here from the operands (a + b = c)
            for i in (i for i in range(len(row)) if keep[i]):
                assert int(row[i]) == (int(row[i - 4]) + int(row[i - 2])) % 23
        assert 0.1 < kept.float().mean() < 0.15  # one answer in each 8-token example
    cfg.data.loss_on = "all"
    batch = InMemoryBlocks(build_corpus(cfg.data).train)[[0, 1]]
    assert torch.equal(batch["labels"], batch["input_ids"])  # every next token is a target


def test_too_little_data_for_one_block_is_a_clear_error():
    tokenizer = build_tokenizer(["a"])
    with pytest.raises(ValueError, match="packs into no block of 65 tokens"):
        pack(datasets.Dataset.from_dict({"text": ["[BOS] a [EOS]"]}), tokenizer, 64, "tiny")


def test_step_sampler_is_a_pure_function_of_seed_and_step():
    full = StepBatchSampler(n_items=10, batch_size=4, seed=3)
    stream = [b for b, _ in zip(full, range(8))]
    assert sorted(i for b in stream[:5] for i in b) == sorted(list(range(10)) * 2)  # whole epochs
    resumed = StepBatchSampler(n_items=10, batch_size=4, seed=3, start_batch=5)
    assert [b for b, _ in zip(resumed, range(3))] == stream[5:8]
    assert stream != [b for b, _ in zip(StepBatchSampler(10, 4, seed=4), range(8))]


def test_ranks_split_the_global_batch():
    one = StepBatchSampler(n_items=50, batch_size=6, seed=0)
    ranks = [StepBatchSampler(n_items=50, batch_size=3, seed=0, rank=r, world_size=2) for r in range(2)]
    for k in range(5):
        assert ranks[0].batch(k) + ranks[1].batch(k) == one.batch(k)
