"""The cost of probing: all default probes on one checkpoint vs one bare forward pass over
the same probe inputs (target <= 1.5x), peak memory of a sweep over 10 vs 100 checkpoints
(target: flat), and peak memory of the report over 1 vs 8 runs of 100 checkpoints (flat: it
reads the per-item scores a run at a time). Trains its own small run in a temp dir first.

    python benchmarks/probe_sweep.py [--model 100k] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from observatory import store
from observatory.sweep import RunInputs, probe_checkpoint
from train import rundir
from train.runner import run_training

REPO = Path(__file__).resolve().parents[1]


def default_probes() -> dict:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="observatory").probes, resolve=True)


def train(root: Path, model: str, steps: int) -> Path:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"checkpoints_dir={root}", "experiment_name=bench", f"model={model}", f"trainer.max_steps={steps}",
            "data.train_examples=20000", "schedule.every=1", "schedule.resume_every=1000", "logger=none"])
    return run_training(cfg)


def bare_forward(model, input_sets: dict[str, torch.Tensor], batch_size: int) -> None:
    with torch.no_grad():
        for tokens in input_sets.values():
            for batch in tokens.split(batch_size):
                model(batch)


def cost_ratio(run_dir: Path, probes: dict, repeats: int, batch_size: int = 256) -> None:
    model = rundir.load_model(run_dir, rundir.read_manifest(run_dir)[-1]["step"])
    inputs = RunInputs.load(run_dir, probes)
    input_sets = inputs.context(model, probes, batch_size).inputs  # exactly what the probes run on
    n_seq = sum(map(len, input_sets.values()))
    bare, probed = [], []
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        t = time.perf_counter()
        bare_forward(model, input_sets, batch_size)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        probe_checkpoint(model, inputs, probes, batch_size)
        probed.append(time.perf_counter() - t)
    b, p = statistics.median(bare[1:]), statistics.median(probed[1:])
    print("probe inputs: " + ", ".join(f"{len(tokens)} {name}" for name, tokens in input_sets.items())
          + f" ({n_seq} sequences)")
    print(f"bare forward {b * 1000:.1f} ms, all probes {p * 1000:.1f} ms, ratio {p / b:.2f} (target <= 1.5)")


def peak_rss(code: str, experiment: Path) -> float:
    """Peak RSS (MiB) of a fresh process running `code` on the experiment (sys.argv[1])."""
    code += "; from benchmarks.memory import own_peak_rss; print(own_peak_rss())"
    out = subprocess.run([sys.executable, "-c", code, str(experiment)], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def sweep_peak_memory(experiment: Path, n_checkpoints: int) -> tuple[float, Path]:
    """Peak RSS (MiB) of a fresh process sweeping the first n checkpoints of the run, and the
    swept copy of the experiment."""
    copy = experiment.parent / f"mem{n_checkpoints}" / "bench"
    shutil.copytree(experiment, copy, ignore=shutil.ignore_patterns("observatory"))
    run_dir = next(copy.iterdir())
    rows = rundir.read_manifest(run_dir)[:n_checkpoints]
    (run_dir / rundir.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = ("import sys; from observatory.sweep import sweep; from benchmarks.probe_sweep import default_probes; "
            "sweep(sys.argv[1], default_probes(), progress=False)")
    return peak_rss(code, copy), copy


def report_peak_memory(swept: Path, n_runs: int) -> float:
    """Peak RSS (MiB) of a fresh process writing the report of an experiment holding `n_runs`
    copies of the swept run's results (renamed, one seed each)."""
    source, copy = store.output_dir(swept), swept.parent.parent / f"report{n_runs}" / "bench"
    out = store.output_dir(copy)
    out.mkdir(parents=True)
    results = pd.read_parquet(source / "results.parquet")
    runs = [f"{results['run'].iloc[0]}-copy{i}" for i in range(n_runs)]
    pd.concat(results.assign(run=run, seed=i) for i, run in enumerate(runs)).to_parquet(out / "results.parquet")
    items = pq.ParquetFile(source / "item_results.parquet")
    column, run_type = items.schema_arrow.get_field_index("run"), items.schema_arrow.field("run").type
    with pq.ParquetWriter(out / "item_results.parquet", items.schema_arrow) as writer:
        for run in runs:
            for i in range(items.num_row_groups):  # a row group per checkpoint, as the sweep writes them
                group = items.read_row_group(i)
                writer.write_table(group.set_column(column, "run", pa.array([run] * len(group), run_type)))
    return peak_rss("import sys; from observatory.report import write_report; write_report(sys.argv[1])", copy)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="100k")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    probes = default_probes()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = train(Path(tmp), args.model, steps=99)  # 100 checkpoints: every step 0..99
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}")
        cost_ratio(run_dir, probes, args.repeats)
        (small, _), (large, swept) = sweep_peak_memory(run_dir.parent, 10), sweep_peak_memory(run_dir.parent, 100)
        print(f"peak RSS sweeping 10 checkpoints {small:.0f} MiB, 100 checkpoints {large:.0f} MiB, "
              f"ratio {large / small:.2f} (target: flat)", flush=True)
        one, eight = report_peak_memory(swept, 1), report_peak_memory(swept, 8)
        print(f"peak RSS of the report over 1 run {one:.0f} MiB, 8 runs {eight:.0f} MiB, ratio {eight / one:.2f} "
              f"(target: flat)")


if __name__ == "__main__":
    main()
