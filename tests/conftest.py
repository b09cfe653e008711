import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """No network, no writes outside temp dirs: W&B offline, Hugging Face offline."""
    home = tmp_path_factory.mktemp("home")
    os.environ.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
        "WANDB_DIR": str(home / "wandb"), "WANDB_CACHE_DIR": str(home / "wandb-cache"),
        "WANDB_DATA_DIR": str(home / "wandb-data"), "HF_HOME": str(home / "hf"), "MPLCONFIGDIR": str(home / "mpl"),
    })


@pytest.fixture
def compose_train(tmp_path):
    """Compose conf/train.yaml with overrides, writing under this test's tmp dir."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="train", overrides=[f"checkpoints_dir={tmp_path}", *overrides])

    return _compose


# A few seconds of training: small batches, a short schedule, a tiny task.
TINY = ["trainer.max_steps=40", "data=modular_addition", "data.tasks.modular_addition.p=23",
        "data.train_examples=2000", "data.probe_items=64", "data.batch_size=8", "data.val_batches=2", "model.n_ctx=32", "schedule.every=10", "schedule.resume_every=5", "optim.warmup_steps=5", "logger=none"]
