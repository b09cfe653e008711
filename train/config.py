"""Config checks that run before any work, and the plain-JSON record of a run.

Hydra runs these checks before it creates a directory, so this module imports neither torch
nor datasets: a bad config is refused in a fraction of a second."""

from __future__ import annotations

import glob
import platform
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from conf import stage_keys
from train.model_config import GPTConfig
from train.tasks import make_task, split_weights

# Keys that change how a run is displayed or stored, never what it computes: a resumed
# run may differ from the original in these and only these.
COSMETIC_KEYS = {"logger", "callbacks", "checkpoints_dir", "run_dir", "data.num_workers", "data.cache_dir",
                 "trainer.enable_progress_bar", "trainer.log_every_n_steps",
                 "compile", "optim.fused_on_gpu"}  # speed knobs: the same computation, other kernels
LOSS_ON = ("all", "answer")  # data.loss_on: train on every next token, or on answer tokens alone
TEXT_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # data.files suffix: datasets builder
PACKAGES = ["torch", "lightning", "hydra-core", "datasets", "tokenizers", "safetensors", "wandb", "numpy"]


class ConfigError(ValueError):
    """A config that cannot work; the message names the key and the fix."""


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first problem found, before any data is built or trained."""
    max_steps, batch_size = cfg.trainer.max_steps, cfg.data.batch_size
    if not isinstance(max_steps, int) or max_steps <= 0:
        raise ConfigError(f"trainer.max_steps={max_steps} must be a positive integer")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"data.batch_size={batch_size} must be a positive integer")
    if cfg.model.n_layer <= 0 or cfg.model.n_ctx <= 0:
        raise ConfigError(f"model.n_layer={cfg.model.n_layer} and model.n_ctx={cfg.model.n_ctx} must be positive")
    try:  # the model's own checks (head split, init scale), before any data is built
        GPTConfig(vocab_size=1, **OmegaConf.to_container(cfg.model, resolve=True))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: {e}") from None
    if cfg.data.seq_len > cfg.model.n_ctx:
        raise ConfigError(f"data.seq_len={cfg.data.seq_len} is longer than the model context "
                          f"model.n_ctx={cfg.model.n_ctx}; lower data.seq_len or raise model.n_ctx")
    if cfg.optim.optimizer.lr <= 0:
        raise ConfigError(f"optim.optimizer.lr={cfg.optim.optimizer.lr} must be positive")
    late = [s for s in cfg.schedule.extra if not 0 <= s <= max_steps]
    if late:
        raise ConfigError(f"schedule.extra steps {late} lie outside [0, trainer.max_steps={max_steps}]")
    if cfg.schedule.resume_every <= 0:
        raise ConfigError(f"schedule.resume_every={cfg.schedule.resume_every} must be positive")
    if cfg.data.loss_on not in LOSS_ON:
        raise ConfigError(f"data.loss_on={cfg.data.loss_on} is not one of {', '.join(LOSS_ON)}")
    if cfg.data.kind == "text":
        if cfg.data.loss_on == "answer":
            raise ConfigError("data.loss_on=answer needs task data with answers; real text has none: use data.loss_on=all")
        check_text_source(cfg.data)
    else:
        check_tasks(cfg.data)
    check_writable(Path(cfg.checkpoints_dir))


def check_tasks(data_cfg: DictConfig) -> None:
    weights, params = split_weights(data_cfg.tasks)
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"data.tasks needs at least one task and non-negative weights that sum above 0, got {weights}")
    for name in weights:
        try:
            make_task(name, **params[name])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"data.tasks.{name}: {e}") from None
    for key in ("train_examples", "probe_items"):
        if data_cfg[key] <= 0:
            raise ConfigError(f"data.{key}={data_cfg[key]} must be positive")
    for name, spec in data_cfg.tasks.items():
        if spec.get("linear_items", 0) < 0:
            raise ConfigError(f"data.tasks.{name}.linear_items={spec.linear_items} must be >= 0")


def check_text_source(data_cfg: DictConfig) -> None:
    sources = [key for key in ("files", "hub", "bundled") if data_cfg.get(key)]
    if len(sources) != 1:
        found = f"; it has {' and '.join(f'data.{s}' for s in sources)}" if sources else ""
        raise ConfigError("data=text needs one source: data.files=[<.txt/.jsonl/.parquet files>], data.hub=<dataset "
                          f"name> or data.bundled=kjv{found}")
    for pattern in data_cfg.files or []:
        if not glob.glob(str(pattern)):
            raise ConfigError(f"data.files: {pattern} matches no file; check the path")
        suffix = Path(pattern).suffix
        if suffix not in TEXT_FORMATS:
            raise ConfigError(f"data.files: {pattern} has suffix {suffix!r}; use one of {', '.join(TEXT_FORMATS)}")


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ConfigError(f"checkpoints_dir={directory} is not writable ({e.strerror}); "
                          "pass checkpoints_dir=<a writable directory>") from None


class ValidateBeforeRun(Callback):
    """Hydra callback: reject a bad config before Hydra creates the run directory."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _validate_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _validate_or_exit(config)


def _validate_or_exit(cfg: DictConfig) -> None:
    try:
        validate(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# ---- the record of a run ------------------------------------------------------------
def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if path in COSMETIC_KEYS:
            continue
        out.update(_flatten(value, path + ".") if isinstance(value, dict) else {path: value})
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every training key that changes what the run computes (a run
    recorded before the observatory's keys were dropped may still carry them: not compared)."""
    training = stage_keys("train")
    a, b = (_flatten({k: v for k, v in c.items() if k in training}) for c in (old, new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]

