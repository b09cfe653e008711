"""The cost of the LLC probe, per experiment that turns it on (grokking, induction): on one
checkpoint, the LLC probe (with its per-component estimates, as configured) against all the
other probes of the experiment, timed side by side in one process (interleaved repeats, the
order alternating; with `--profile` also one whole-model estimate by each sampler, devinterp's
among them, and the forward and backward passes and the noise draws that every sampler
makes); then the wall time of the LLC sweep alone over every checkpoint of the
experiment's run (a copy of the run directory, so nothing stored is reused), with `--workers`
processes. Reads existing runs: train them first with
`python -m observatory.pipeline experiment=<name>` (or `python -m train experiment=<name>`).

    python benchmarks/llc_cost.py [--experiments grokking induction] [--repeats 3] [--workers 2] [--skip-sweep] [--profile]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from observatory.probes import llc
from observatory.store import experiment_dir
from observatory.sweep import RunInputs, probe_checkpoint, sweep
from observatory.sweep.discovery import find_runs
from train import rundir


def experiment_probes(name: str) -> tuple[dict, Path]:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="observatory", overrides=[f"experiment={name}"])
    return OmegaConf.to_container(cfg.probes, resolve=True), experiment_dir(cfg)


def side_by_side(run_dir: Path, probes: dict, step: int, repeats: int, profile: bool) -> dict[str, float]:
    """Median seconds on one checkpoint of: the LLC probe as configured ("llc"), the whole
    model's LLC alone when components are configured ("llc_model"), every other probe
    ("others"), and with `profile` the parts of one whole-model estimate (`estimate_parts`).
    Fresh inputs for each probe run, so no forward pass is shared; the order rotates."""
    model = rundir.load_model(run_dir, step)
    sets = {"llc": {"llc": probes["llc"]}, "others": {k: v for k, v in probes.items() if k != "llc"}}
    if probes["llc"].get("components"):
        sets["llc_model"] = {"llc": probes["llc"] | {"components": []}}
    tasks = {name: partial(run_probes, model, run_dir, cfgs) for name, cfgs in sets.items()}
    if profile:
        tasks |= estimate_parts(model, run_dir, probes["llc"])
    times = {name: [] for name in tasks}
    names = list(tasks)
    for i in range(repeats + 1):  # round 0 warms up (imports devinterp) and is dropped
        for name in names[i % len(names):] + names[: i % len(names)]:
            seconds = tasks[name]()
            if i:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def run_probes(model, run_dir: Path, cfgs: dict) -> float:
    inputs = RunInputs.load(run_dir, cfgs)
    started = time.perf_counter()
    probe_checkpoint(model, inputs, cfgs)
    return time.perf_counter() - started


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def estimate_parts(model, run_dir: Path, cfg: dict) -> dict:
    """Timers of one whole-model estimate by each sampler (devinterp's `llc`; the chains advanced
    together, chain after chain within a step or by vmap) and of the work no sampler avoids:
    chains × steps forward and backward passes, one chain at a time ("floor: fwd+bwd"), and
    the SGLD noise, chains × steps × weights normal draws ("floor: noise")."""
    s = llc.settings(cfg | {"components": []})
    inputs = RunInputs.load(run_dir, {"llc": cfg})
    blocks, mask = inputs.sampling_blocks, inputs.loss_masks["sampling_blocks"]
    weights = llc.loss_weights(mask)
    order = llc.batch_order(len(blocks), min(s.batch_size, len(blocks)), s.seed)  # as estimate picks (max_blocks aside)
    batches = [(blocks[rows], weights[rows]) for rows in order]
    steps = [batches[i % len(batches)] for i in range(s.burnin + s.draws)]
    params = list(model.parameters())

    def passes():
        for _ in range(s.chains):
            for ids, wt in steps:
                torch.autograd.grad((llc.token_loss(model, ids) * wt).float().mean(), params)

    def noise():
        generators = [torch.Generator().manual_seed(c) for c in range(s.chains)]
        for _ in steps:
            for p in params:
                for g in generators:
                    torch.empty_like(p).normal_(generator=g)

    parts = {f"estimate: {x}": partial(llc.estimate, model, blocks, mask, s, sampler=x)
             for x in ("devinterp", "chainwise", "vmap")}
    return {name: partial(timed, fn) for name, fn in parts.items()} | {
        "floor: fwd+bwd": partial(timed, passes), "floor: noise": partial(timed, noise)}


def llc_sweep_seconds(experiment_dir: Path, probes: dict, workers: int) -> tuple[float, int]:
    """Wall time of sweeping the LLC probe alone over a fresh copy of the experiment's runs."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / experiment_dir.name
        shutil.copytree(experiment_dir, copy, ignore=shutil.ignore_patterns("observatory", "resume", "wandb"))
        started = time.perf_counter()
        summary = sweep(copy, {"llc": probes["llc"]}, workers=workers, progress=False)
        return time.perf_counter() - started, summary.probed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["grokking", "induction"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-sweep", action="store_true", help="only the side-by-side cost on one checkpoint")
    parser.add_argument("--profile", action="store_true",
                        help="also one whole-model estimate by each sampler, and the forward/backward passes and noise in it")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a sweep worker runs
    print(f"torch {torch.__version__}, 1 thread per process; sweeps with {args.workers} workers")
    for name in args.experiments:
        probes, experiment_dir = experiment_probes(name)
        if "llc" not in probes:
            print(f"{name}: the experiment does not turn the llc probe on; skipped")
            continue
        runs = find_runs(experiment_dir)
        if not runs:
            print(f"{name}: no runs under {experiment_dir}; run python -m observatory.pipeline experiment={name}")
            continue
        run_dir = runs[0]
        step = rundir.read_manifest(run_dir)[-1]["step"]
        components = probes["llc"].get("components") or []
        t = side_by_side(run_dir, probes, step, args.repeats, args.profile)
        print(f"{name}: {run_dir.name} step {step}: llc probe {t['llc']:.2f} s (components: {components or 'none'}), "
              f"the other probes ({', '.join(k for k in probes if k != 'llc')}) {t['others']:.2f} s: "
              f"llc costs {t['llc'] / t['others']:.1f}x the others", flush=True)
        if "llc_model" in t:
            print(f"{name}: the whole model's LLC alone {t['llc_model']:.2f} s: {t['llc_model'] / t['others']:.1f}x the others",
                  flush=True)
        for part in (k for k in t if ":" in k):
            print(f"{name}: {part} {t[part]:.2f} s: {t[part] / t['others']:.1f}x the others", flush=True)
        if not args.skip_sweep:
            seconds, n = llc_sweep_seconds(experiment_dir, probes, args.workers)
            print(f"{name}: LLC sweep of {n} checkpoints with {args.workers} workers: {seconds:.0f} s "
                  f"({seconds / 60:.1f} min, {seconds / max(n, 1):.1f} s per checkpoint)", flush=True)


if __name__ == "__main__":
    main()
