import os
import shutil
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]


def probe_defaults() -> dict:
    """Every probe's settings as its config files set them (conf/probes/): the one source of
    their defaults. The LLC, off by default, with conf/probes/llc/default.yaml."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "probes" / "default.yaml"))
    return settings | {"llc": OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "probes" / "llc" / "default.yaml"))}

# conf/debug/default.yaml: a few seconds of training (40 steps of the 13k model with a 32-token
# context on modular addition, batches of 8, 11 checkpoints, no logger). On the command line of
# `python -m train` it is the override "debug=default"; in a test, the fixtures below.
DEBUG = "debug=default"


def unprobed_copy(experiment: Path, into: Path) -> Path:
    """A copy of a trained experiment without its observatory outputs: a sweep of it starts afresh."""
    return Path(shutil.copytree(experiment, into / experiment.name, ignore=shutil.ignore_patterns("observatory")))


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """No network, no writes outside temp dirs: W&B offline, Hugging Face offline."""
    home = tmp_path_factory.mktemp("home")
    os.environ.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
        "WANDB_DIR": str(home / "wandb"), "WANDB_CACHE_DIR": str(home / "wandb-cache"),
        "WANDB_DATA_DIR": str(home / "wandb-data"), "HF_HOME": str(home / "hf"), "MPLCONFIGDIR": str(home / "mpl"),
    })


def _compose_train(checkpoints_dir, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="train", overrides=[f"checkpoints_dir={checkpoints_dir}", *overrides])


@pytest.fixture
def compose_train(tmp_path):
    """Compose conf/train.yaml with overrides, writing under this test's tmp dir."""
    return partial(_compose_train, tmp_path)


@pytest.fixture
def compose_debug(tmp_path):
    """compose_train with debug=default first: the config of a few seconds of training."""
    return partial(_compose_train, tmp_path, DEBUG)


@pytest.fixture(scope="session")
def train_debug():
    """train_debug(checkpoints_dir, *overrides): train debug=default with overrides in this
    process, for fixtures that share a run across tests; returns the run directory."""
    from train.runner import run_training

    return lambda checkpoints_dir, *overrides: run_training(_compose_train(checkpoints_dir, DEBUG, *overrides))


def killed_after(cmd: list[str], files: Path, n: int) -> int:
    """Start `cmd` (python -m ...), SIGKILL it once `files` holds n stored checkpoint results
    (or it ended, or 120 s passed); how many it had stored."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(files.glob("*/*.parquet"))) < n and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(list(files.glob("*/*.parquet")))
