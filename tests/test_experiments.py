"""Every experiment composes for both stages and passes the training config checks."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from train.config import validate
from train.data import InMemoryBlocks, build_corpus
from train.model import IGNORE_INDEX

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_for_training_and_observatory(name, tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        train = compose(config_name="train", overrides=[f"experiment={name}", f"checkpoints_dir={tmp_path}"],
                        return_hydra_config=True)
        observatory = compose(config_name="observatory", overrides=[f"experiment={name}"])
    validate(train)
    assert train.experiment_name == observatory.experiment_name == name
    assert train.hydra.sweep.dir.endswith(name)


def test_coursework_experiments_exist():
    assert {"quickstart", "grokking", "induction", "scaling", "mirage"} <= set(EXPERIMENTS)


def test_grokking_trains_one_example_per_sequence_on_its_answer(tmp_path):
    """Nanda et al.'s input: each training sequence is one whole example at fixed positions,
    and the only target is the answer, (a + b) mod p, computed here from the operands."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=grokking", "data.train_examples=300",
                                                      f"data.cache_dir={tmp_path}", f"checkpoints_dir={tmp_path}"])
    corpus = build_corpus(cfg.data)
    batch = InMemoryBlocks(corpus.train)[list(range(len(corpus.train)))]
    assert len(corpus.train) == 300  # no example is cut across two sequences
    tokens = [[corpus.tokenizer.id_to_token(i) for i in row] for row in batch["input_ids"].tolist()]
    assert all(row[:2] == ["[BOS]", "[mod]"] and row[3] == "+" and row[5] == "=" and row[7] == "[EOS]" for row in tokens)
    kept = (batch["labels"] != IGNORE_INDEX).nonzero()[:, 1]
    assert kept.tolist() == [6] * 300  # the answer's position, alone
    assert all(int(row[6]) == (int(row[2]) + int(row[4])) % 113 for row in tokens)
