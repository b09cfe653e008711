"""The observatory on a GPU: the same checkpoints probed on the CPU and on the GPU agree (every
metric to 1e-4; the LLC's mean within two of its combined standard errors), and checkpoints
per second per model size on the GPU. Trains what it probes itself, on the CPU, in a temporary
directory; a prepared check for a machine with a GPU (on CPU alone, `--device cpu` runs the
same code against itself).

    python -m benchmarks.gpu_probes [--short] [--device cuda]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from observatory.sweep import sweep

TOLERANCE = 1e-4


def train(root: Path, model: str, steps: int) -> Path:
    cmd = [sys.executable, "-m", "train", f"checkpoints_dir={root}", "experiment_name=gpu", f"model={model}",
           f"trainer.max_steps={steps}", "logger=none", "trainer=cpu"]
    subprocess.run(cmd, check=True, capture_output=True)
    return root / "gpu"


def probes(llc: bool) -> dict:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="observatory", overrides=["+probes/llc@probes.llc=default"] if llc else [])
    return OmegaConf.to_container(cfg.probes, resolve=True)


def agreement(cpu: pd.DataFrame, gpu: pd.DataFrame) -> None:
    key = ["run", "step", "probe", "metric"]
    both = cpu.merge(gpu, on=key, suffixes=("_cpu", "_gpu"))
    assert len(both) == len(cpu) == len(gpu), "the two sweeps wrote different rows"
    estimate = (both["probe"] == "llc") & both["metric"].str.endswith("mean")
    sampled = (both["probe"] == "llc") & ~estimate  # chains and health: samples, compared through the mean
    exact = both[~estimate & ~sampled]
    difference = (exact["value_cpu"] - exact["value_gpu"]).abs()
    worst = exact.loc[difference.idxmax()] if len(exact) else None
    print(f"{len(exact)} metric values: largest |CPU - GPU| {difference.max():.2e}"
          + (f" ({worst['probe']}/{worst['metric']} at step {worst['step']})" if worst is not None else "")
          + f", {int((difference > TOLERANCE).sum())} above {TOLERANCE:g}")
    llc = both[estimate]
    if len(llc):
        sigma = np.sqrt(llc["stderr_cpu"] ** 2 + llc["stderr_gpu"] ** 2)
        within = ((llc["value_cpu"] - llc["value_gpu"]).abs() <= 2 * sigma).sum()
        print(f"LLC means: {within} of {len(llc)} within two combined standard errors")


def speed(root: Path, device: str, sizes: list[str], probe_cfgs: dict) -> None:
    for size in sizes:
        experiment = train(root / size, size, 2)  # checkpoints at steps 0, 1, 2
        sweep(experiment, probe_cfgs, progress=False, device=device)  # warm-up: CUDA context, kernels, inputs
        shutil.rmtree(experiment / "observatory")
        started = time.perf_counter()
        summary = sweep(experiment, probe_cfgs, progress=False, device=device)
        seconds = time.perf_counter() - started
        print(f"{size}: {summary.probed / seconds:.2f} checkpoints/s on {device} ({summary.probed} in {seconds:.1f} s)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="a 13k run of 40 steps; speed for 13k and 2.7m only")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as the CPU computes it (TF32 would round to 1e-3)
    torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        experiment = train(root / "agree", "13k", 40 if args.short else 400)
        probe_cfgs = probes(llc=True)
        copy = Path(shutil.copytree(experiment, root / "agree-gpu" / "gpu"))
        cpu = sweep(experiment, probe_cfgs, progress=False, device="cpu").table
        gpu = sweep(copy, probe_cfgs, progress=False, device=args.device).table
        agreement(cpu, gpu)
        sizes = ["13k", "2.7m"] if args.short else ["13k", "340k", "2.7m", "21m", "98m"]
        speed(root / "speed", args.device, sizes, probes(llc=False))


if __name__ == "__main__":
    main()
