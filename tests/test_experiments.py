"""Every experiment composes for both stages and passes the training config checks."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from train.config import validate

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
