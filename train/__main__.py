"""`python -m train [overrides]` — see conf/train.yaml."""

import sys

import hydra
from omegaconf import DictConfig

from train.wandb_run import INTERRUPTED


class RunFailed(Exception):
    """One job of a sweep failed: Hydra records it, runs the other jobs, then exits 1."""


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from train.config import ConfigError  # imported here so --help stays fast
    from train.module import NonFiniteLoss
    from train.runner import run_training

    try:
        run_training(cfg)
    except KeyboardInterrupt:  # before or after fit (within it, run_training says where it stopped)
        print(f"{cfg.run_name}: interrupted; run the same command to resume", file=sys.stderr)
        sys.exit(INTERRUPTED)
    except (ConfigError, NonFiniteLoss) as e:  # no traceback: the message says what to do
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise RunFailed(f"{cfg.run_name}: {e}") from None
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)


if __name__ == "__main__":
    main()
