"""The configs of the two stages, and which keys each one owns.

An experiment file (conf/experiment/) feeds both `python -m train` and `python -m observatory`,
so each stage's composed config also carries the other stage's keys. A stage owns the keys
its primary config (train.yaml, observatory.yaml) declares: its top-level keys and the
config groups it selects by default. A group whose default is null is only a slot for an
experiment file's `override` and is not owned.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).parent
STAGES = ("train", "observatory")


def stage_keys(stage: str) -> set[str]:
    """The top-level config keys that `stage` ("train" or "observatory") owns."""
    primary = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{stage}.yaml"))
    keys = set(primary) - {"defaults", "hydra"}
    for entry in primary.get("defaults", []):
        if isinstance(entry, dict):
            (group, option), = entry.items()
            if option is not None and not group.startswith("optional "):
                keys.add(group)
    return keys


def own_keys(cfg: DictConfig, stage: str) -> DictConfig:
    """`cfg` without the keys another stage owns (a copy; interpolations still resolve)."""
    return OmegaConf.masked_copy(cfg, sorted(stage_keys(stage) & set(cfg)))


def override_key(override: str) -> str:
    """The top-level key a command-line override sets: `+probes.linear.tasks=[x]` -> probes,
    `hydra/launcher=parallel` -> hydra, `~probes.linear` -> probes."""
    path = override.lstrip("+~").split("=", 1)[0]
    return path.split("/", 1)[0].split(".", 1)[0]


def split_overrides(overrides: list[str]) -> dict[str, list[str]]:
    """{stage: the overrides it takes}: an override goes to every stage that owns its key;
    the experiment choice goes to both; anything else (hydra/..., a new key) to training,
    whose Hydra names it in its error if it is wrong."""
    owners = {stage: stage_keys(stage) for stage in STAGES}
    split = {stage: [] for stage in STAGES}
    for override in overrides:
        key = override_key(override)
        stages = STAGES if key == "experiment" else [s for s in STAGES if key in owners[s]] or ["train"]
        for stage in stages:
            split[stage].append(override)
    return split
