"""`python -m observatory.report [experiment=<name> | experiment_name=<name>] [checkpoints_dir=…]`:
without probing anything, consolidate an experiment's stored results (whichever jobs wrote them:
the shards of a sweep end here), write the report and log it to W&B (`wandb.mode`)."""

import sys

from hydra import compose, initialize_config_module

from observatory import store
from observatory.publish import publish


def main(cfg) -> int:
    experiment = store.experiment_dir(cfg)
    results = store.output_dir(experiment) / "results.parquet"
    if not results.exists() and not store.checkpoint_files(experiment):
        print(f"error: {results} does not exist; probe the checkpoints first: python -m observatory "
              f"checkpoints_dir={cfg.checkpoints_dir} experiment_name={cfg.experiment_name}", file=sys.stderr)
        return 2
    try:
        index = publish(experiment, cfg.experiment_name, cfg.wandb.mode)
    except (store.StoreBusy, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    with initialize_config_module(config_module="conf", version_base="1.3"):  # no run dir: only reads
        sys.exit(main(compose(config_name="observatory", overrides=sys.argv[1:])))
