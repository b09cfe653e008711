"""Find the runs of an experiment and the checkpoints their manifests list. Files are
verified (sha256) when loaded: `train.rundir.load_weights_file`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from observatory.hub import source as hub_source
from train import rundir


@dataclass(frozen=True)
class Checkpoint:
    run_dir: Path
    run: str
    step: int
    tokens: int
    file: str
    sha256: str

    @property
    def path(self) -> Path:
        return self.run_dir / self.file


@dataclass(frozen=True)
class Problem:
    """A checkpoint (or run) that cannot be probed, and why."""

    run: str
    step: int | None
    reason: str


def find_runs(experiment_dir: Path) -> list[Path]:
    """Run directories (those holding run.json) under an experiment directory, sorted."""
    return sorted(p.parent for p in Path(experiment_dir).glob(f"*/{rundir.RUN_JSON}"))


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    return [
        Checkpoint(run_dir, run_dir.name, row["step"], row["tokens"], row["file"], row["sha256"])
        for row in sorted(rundir.read_manifest(run_dir), key=lambda r: r["step"])
    ]



def load(ckpt: Checkpoint, device: str = "cpu"):
    """The checkpoint's model on `device`: our weights file (its sha256 checked, never
    unpickled), or a hub repository's revision (observatory/hub)."""
    if hub_source.is_hub_run(ckpt.run_dir):
        try:
            return hub_source.load(ckpt.run_dir, ckpt.file, ckpt.sha256, device)
        except (ValueError, OSError) as e:  # a failed download, a corrupt file: this checkpoint fails, not the sweep
            raise rundir.CheckpointError(f"{ckpt.file}: {e}") from None
    return rundir.load_weights_file(ckpt.path, ckpt.sha256).to(device)
