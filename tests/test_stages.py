"""Each stage keeps its own keys: an experiment file feeds both, and neither one's settings
may change the other's behaviour or identity."""

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from conf import own_keys, split_overrides, stage_keys
from train import rundir
from train.config import config_differences
from train.runner import run_training

GROKKING_TINY = ["experiment=grokking", "debug=default", "data.tasks.modular_addition.p=23",
                 "data.tasks.modular_addition.linear_items=64"]


def compose_observatory(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="observatory", overrides=list(overrides))


def test_a_probe_setting_does_not_change_a_finished_runs_identity(compose_train, capsys):
    cfg = compose_train(*GROKKING_TINY)
    assert list(cfg.probes.linear.tasks) == ["modular_addition"]  # the experiment file sets it
    run_dir = run_training(cfg)
    recorded = rundir.read_run_json(run_dir)["config"]
    assert "probes" not in recorded and recorded["trainer"]["max_steps"] == 40
    run_training(compose_train(*GROKKING_TINY, "probes.linear.tasks=[]"))  # as if the file were edited
    assert "already completed (11 checkpoints); nothing to do" in capsys.readouterr().out


def test_a_run_recorded_with_observatory_keys_is_the_same_run():
    config = {"seed": 0, "trainer": {"max_steps": 20}}
    assert config_differences(config | {"probes": {"linear": {}}}, config) == []
    assert config_differences(config, config | {"seed": 1}) == ["seed: 0 -> 1"]


def test_the_observatory_config_carries_no_training_keys():
    cfg = own_keys(compose_observatory("experiment=grokking"), "observatory")
    assert set(cfg) == stage_keys("observatory")
    assert not {"model", "data", "trainer", "optim", "schedule"} & set(cfg)
    assert list(cfg.probes.linear.tasks) == ["modular_addition"] and cfg.experiment_name == "grokking"


def test_overrides_go_to_the_stage_that_owns_their_key():
    split = split_overrides(["experiment=grokking", "model=100k,340k", "probes.linear.fit_fraction=0.5", "workers=2",
                             "checkpoints_dir=/tmp/x", "hydra/launcher=parallel", "~probes.weights"])
    assert split["train"] == ["experiment=grokking", "model=100k,340k", "checkpoints_dir=/tmp/x",
                              "hydra/launcher=parallel"]
    assert split["observatory"] == ["experiment=grokking", "probes.linear.fit_fraction=0.5", "workers=2",
                                    "checkpoints_dir=/tmp/x", "~probes.weights"]
