import pytest
import torch

from train.data import SPECIAL_TOKENS, StepBatchSampler, build_split, build_tokenizer
from train.tasks import ModularAddition

TASKS = {"modular_addition": {"p": 13, "train_fraction": 0.4}}


def test_modular_addition_answers_and_disjoint_split():
    task = ModularAddition(p=13, train_fraction=0.4)
    train, val = list(task.examples("train", seed=0)), list(task.examples("val", seed=0))
    assert len(train) == round(0.4 * 169) and len(train) + len(val) == 169
    assert not {e["prompt"] for e in train} & {e["prompt"] for e in val}
    for e in train + val:
        a, _, b, _ = e["prompt"].split()
        assert int(e["answer"]) == (int(a) + int(b)) % 13
    assert train != list(task.examples("train", seed=1))  # the split depends on the seed


def test_tokenizer_round_trip():
    tokenizer = build_tokenizer(ModularAddition(p=13).symbols())
    assert tokenizer.get_vocab_size() == len(SPECIAL_TOKENS) + 15
    ids = tokenizer.encode("[BOS] 12 + 3 = 2 [EOS]").ids
    assert ids[0] == SPECIAL_TOKENS.index("[BOS]") and tokenizer.decode(ids, skip_special_tokens=False).split() == \
        ["[BOS]", "12", "+", "3", "=", "2", "[EOS]"]


def test_packed_blocks_are_deterministic_and_held_out(tmp_path):
    tokenizer = build_tokenizer(ModularAddition(p=13).symbols())
    a = build_split(TASKS, "train", 0, tokenizer, seq_len=16, cache_dir=str(tmp_path / "a"))
    b = build_split(TASKS, "train", 0, tokenizer, seq_len=16, cache_dir=str(tmp_path / "b"))
    blocks = a[:]["input_ids"]
    assert torch.equal(blocks, b[:]["input_ids"]) and blocks.shape[1] == 17
    # every packed example decodes to a true sum, and none of the held-out prompts is trained on
    text = tokenizer.decode(blocks.flatten().tolist(), skip_special_tokens=False)
    examples = [e.split() for e in text.split("[BOS]")[1:-1]]
    assert examples and all(int(x[4]) == (int(x[0]) + int(x[2])) % 13 for x in examples)
    val_prompts = {e["prompt"] for e in ModularAddition(13, 0.4).examples("val", 0)}
    assert not {" ".join(x[:4]) for x in examples} & val_prompts


def test_seq_len_too_long_for_the_data_is_a_clear_error(tmp_path):
    tokenizer = build_tokenizer(ModularAddition(p=2).symbols())
    with pytest.raises(ValueError, match="packs into no block"):
        build_split({"modular_addition": {"p": 2, "train_fraction": 0.5}}, "train", 0, tokenizer, 64, str(tmp_path))


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
