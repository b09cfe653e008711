"""`python -m observatory.calibrate experiment=<name> [run=<run>] [step=<step>] [write=<file>]`:
choose the LLC sampler's settings on one checkpoint (conf/calibrate.yaml); with
`hub.repo=<org/name> hub.text=<text>` on a revision of a public suite (docs/suites.md).

Every setting of a small grid (step size × nβ × localization) samples the checkpoint with
the probe's other settings; a setting passes when none of its chains diverged or went
negative and its chains' mean loss is flat after burn-in (|drift| within `max_drift`).
Of those that pass, the one with the flattest, most consistent traces is chosen: the
smallest |drift| + (spread of the chains' estimates / their mean). A step size too small
never settles within burn-in (the loss still rises through the draws: large drift); one too
large diverges. Writes calibration.csv and a chart of every setting's loss traces under
<experiment>/observatory/calibration/, and with `write=<file>` the chosen settings as a probe
config (e.g. conf/probes/llc/<experiment>.yaml, which an experiment file selects)."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from observatory.probes.llc import Estimate, Settings, estimate, settings
from observatory.store import experiment_dir

GRID_KEYS = ("lr", "n_beta", "localization")


def calibrate(model, blocks, loss_mask, base: Settings, grid: dict[str, list[float]],
              component: str | None = None, log=None) -> tuple[pd.DataFrame, dict[tuple, Estimate]]:
    """One estimate per grid point: (a table with each setting's verdict, {setting: Estimate})."""
    rows, estimates = [], {}
    points = list(itertools.product(*(grid.get(k) or [getattr(base, k)] for k in GRID_KEYS)))
    for i, point in enumerate(points):
        e = estimate(model, blocks, loss_mask, dataclasses.replace(base, **dict(zip(GRID_KEYS, map(float, point)))),
                     component)
        estimates[point] = e
        rows.append(dict(zip(GRID_KEYS, point)) | verdict(e))
        if log:
            r = rows[-1]
            log(f"[{i + 1}/{len(points)}] lr={point[0]:g} n_beta={point[1]:g} localization={point[2]:g}: "
                f"llc {r['llc']:.3g} ± {r['stderr']:.2g}, drift {r['drift']:+.3f}, diverged {r['diverged']:.2f}, "
                f"negative {r['negative']:.2f} -> {'pass' if r['passes'] else 'fail'}")
    table = pd.DataFrame(rows)
    table["chosen"] = False
    best = choose(table)
    if best is not None:
        table.loc[best, "chosen"] = True
    return table, estimates


def verdict(e: Estimate) -> dict:
    spread = float(np.nanstd(e.per_chain) / max(abs(e.mean), 1e-12)) if np.isfinite(e.mean) else float("inf")
    rise = float(np.nanmax(e.draws) - e.init_loss) if np.isfinite(e.draws).any() else float("inf")
    return {"llc": e.mean, "stderr": e.stderr, "drift": e.drift, "diverged": float(e.diverged.mean()),
            "negative": float(e.negative.mean()), "spread": spread, "max_loss_rise": rise,
            "init_loss": e.init_loss, "passes": e.healthy}


def choose(table: pd.DataFrame) -> int | None:
    """The index of the passing setting with the flattest, most consistent traces, or None."""
    ok = table[table["passes"]]
    if not len(ok):
        return None
    score = ok["drift"].abs() + ok["spread"]
    return int(score.idxmin())


def plot_traces(table: pd.DataFrame, estimates: dict[tuple, Estimate], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = sorted(table["lr"].unique())
    rows = sorted({(n, g) for n, g in zip(table["n_beta"], table["localization"])})
    fig, axes = plt.subplots(len(rows), len(lrs), figsize=(2.6 * len(lrs), 2.0 * len(rows) + 0.6), squeeze=False,
                             sharex=True)
    for r, (n_beta, loc) in enumerate(rows):
        for c, lr in enumerate(lrs):
            ax = axes[r][c]
            e = estimates.get((lr, n_beta, loc))
            row = table[(table["lr"] == lr) & (table["n_beta"] == n_beta) & (table["localization"] == loc)]
            if e is None or not len(row):
                ax.axis("off")
                continue
            row = row.iloc[0]
            for chain in e.trace:
                ax.plot(chain - e.init_loss, linewidth=0.7)
            ax.axvspan(0, e.burnin, color="grey", alpha=0.15, linewidth=0)
            ax.axhline(0, color="black", linewidth=0.5)
            finite = e.trace[np.isfinite(e.trace)] - e.init_loss
            if len(finite):
                top = np.percentile(finite, 99)
                ax.set_ylim(min(0, finite.min()) * 1.1, max(top * 1.3, 1e-3))
            status = "CHOSEN" if row["chosen"] else ("pass" if row["passes"] else "fail")
            color = "green" if row["chosen"] else ("black" if row["passes"] else "red")
            ax.set_title(f"ε={lr:g} nβ={n_beta:g} γ={loc:g}\nλ̂={row['llc']:.3g} drift={row['drift']:+.2f} {status}",
                         fontsize=7, color=color)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel("loss − checkpoint loss", fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("SGLD step (grey: burn-in)", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_settings(path: Path, chosen: Settings, note: str) -> None:
    """The chosen LLC settings as a probe config file (every setting spelled out)."""
    lines = [f"# LLC sampler settings chosen by python -m observatory.calibrate ({note})",
             "# (observatory/probes/llc.py for what each one does)"]
    for key, value in dataclasses.asdict(chosen).items():
        if isinstance(value, float) and "e" in repr(value) and "." not in repr(value):
            value = repr(value).replace("e", ".0e")  # 3.0e-05: a float in YAML 1.1 too (3e-05 is a string there)
        lines.append(f"{key}: {list(value) if isinstance(value, (list, tuple)) else value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import torch
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from conf import CONF_DIR
    from observatory.hub.source import applicable_probes, is_hub_run
    from observatory.hub.source import run_name as hub_run_name
    from observatory.probes.llc import sampled_model
    from observatory.sweep import SweepError
    from observatory.sweep.discovery import list_checkpoints, load
    from observatory.sweep.runner import register_hub_repo, sampling_data

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="calibrate", overrides=list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(cfg.threads) if cfg.threads else None
    try:
        register_hub_repo(cfg)  # hub.repo=...: the repository is a run of the experiment, as for the sweep
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    experiment = experiment_dir(cfg)
    runs = sorted(p.parent.name for p in experiment.glob("*/run.json"))
    if not runs:
        print(f"error: no runs under {experiment}; train first", file=sys.stderr)
        return 2
    run = cfg.run or (hub_run_name(cfg.hub.repo) if cfg.hub.repo else runs[0])
    run_dir = experiment / run
    checkpoints = {c.step: c for c in list_checkpoints(run_dir)} if (run_dir / "run.json").exists() else {}
    if not checkpoints:
        print(f"error: {run_dir} has no checkpoints (runs here: {', '.join(runs)})", file=sys.stderr)
        return 2
    step = max(checkpoints) if cfg.step is None else int(cfg.step)
    if step not in checkpoints:
        print(f"error: {run} has no checkpoint at step {step} (it has {sorted(checkpoints)})", file=sys.stderr)
        return 2
    blocks, mask = sampling_data(run_dir)
    if not len(blocks):
        print(f"error: {run_dir} has no training data to sample on (our runs: training-split probe items; "
              "a hub repository: hub.text=...)", file=sys.stderr)
        return 2
    if cfg.component and is_hub_run(run_dir):
        try:
            applicable_probes({"llc": {"components": [cfg.component]}}, has_text=True)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    model = sampled_model(load(checkpoints[step]))
    given = OmegaConf.to_container(cfg.probes, resolve=True).get("llc")  # the experiment's, else the probe's defaults
    probe = settings(given or OmegaConf.to_container(OmegaConf.load(CONF_DIR / "probes" / "llc" / "default.yaml")))
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.sampler, resolve=True).items() if v is not None}
    base = dataclasses.replace(probe, **overrides)
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    print(f"calibrating the LLC sampler on {run} step {step} ({len(blocks)} blocks of training data; "
          f"{base.chains} chains, {base.burnin} burn-in + {base.draws} draws each)", flush=True)
    table, estimates = calibrate(model, blocks, mask, base, grid, cfg.component, log=lambda m: print(m, flush=True))
    out = experiment / "observatory" / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{run}-step{step}" + (f"-{cfg.component}" if cfg.component else "")
    table.assign(run=run, step=step, component=cfg.component).to_csv(out / f"{stem}.csv", index=False)
    plot_traces(table, estimates, out / f"{stem}.png", f"{cfg.experiment_name}/{run} step {step}: loss traces per setting")
    print(f"traces: {out / f'{stem}.png'}; table: {out / f'{stem}.csv'}")
    chosen = table[table["chosen"]]
    if not len(chosen):
        print("no setting passed: widen the grid (smaller step sizes, larger nβ or localization) and run again")
        return 1
    best = chosen.iloc[0]
    settings_chosen = dataclasses.replace(probe, **{k: float(best[k]) for k in GRID_KEYS})  # not the grid's sampler
    print(f"chosen: lr={best['lr']:g} n_beta={best['n_beta']:g} localization={best['localization']:g} "
          f"(llc {best['llc']:.4g} ± {best['stderr']:.2g}, drift {best['drift']:+.3f})")
    if cfg.write:
        write_settings(Path(cfg.write), settings_chosen, f"{cfg.experiment_name}/{run} step {step}")
        print(f"wrote {cfg.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
