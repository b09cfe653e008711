"""`python -m train [overrides]` — see conf/train.yaml."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from train.config import ConfigError  # imported here so --help stays fast
    from train.runner import run_training

    try:
        run_training(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
