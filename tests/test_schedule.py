import pytest

from train.checkpointing import checkpoint_steps
from train.module import warmup_cosine


def test_pythia_preset_gives_its_154_checkpoints(compose_train):
    cfg = compose_train("schedule=pythia", "trainer.max_steps=143000")
    steps = checkpoint_steps(cfg.trainer.max_steps, cfg.schedule.log2_max, cfg.schedule.every, cfg.schedule.extra)
    assert len(steps) == 154
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-2:] == [142000, 143000]


def test_schedule_union_and_final_step():
    assert checkpoint_steps(100, log2_max=None, every=30, extra=[7, 50]) == [0, 1, 2, 4, 7, 8, 16, 30, 32, 50, 60, 64, 90, 100]
    assert checkpoint_steps(5, log2_max=2, every=None) == [0, 1, 2, 5]
    assert checkpoint_steps(1) == [0, 1]


@pytest.mark.parametrize("step,expected", [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.55), (100, 0.1), (200, 0.1)])
def test_warmup_then_cosine(step, expected):
    assert warmup_cosine(warmup_steps=10, max_steps=100, min_lr_ratio=0.1)(step) == pytest.approx(expected)
