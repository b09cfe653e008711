"""From the results table to "when did it appear?": the emergence table, the across-scale and
metric-choice ("mirage") tables, PNG charts and a self-contained index.html."""

from __future__ import annotations

import base64
import html
import json
import sys
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from observatory import store  # noqa: E402
from observatory.emergence import emergence_table, headline_metrics, onsets_over_seeds  # noqa: E402
from observatory.stages import ED_PROBE, LLC_PROBE, llc_curves, onsets_near_boundaries, stage_table  # noqa: E402

CONTINUOUS = ("token_accuracy", "answer_logprob", "brier")


def by_size(results: pd.DataFrame) -> list[str]:
    return list(results.sort_values("n_params")["model"].drop_duplicates())


def scale_table(results: pd.DataFrame, emergence: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per capability and size (mean over seeds): final value, onset, and for accuracy-like
    metrics the smallest size whose final value reaches `threshold`."""
    last = results[results["step"] == results.groupby("run")["step"].transform("max")]
    finals = last.groupby(["probe", "metric", "model", "n_params"], as_index=False)["value"].mean()
    onsets = emergence.groupby(["probe", "metric", "model"], as_index=False)[["onset_step", "onset_tokens", "onset_flops_6nd"]].mean() \
        if "onset_tokens" in emergence else emergence[["probe", "metric", "model"]].drop_duplicates()
    table = finals.rename(columns={"value": "final_value"}).merge(onsets, on=["probe", "metric", "model"], how="left")
    accuracies = set(map(tuple, results.loc[results["kind"] == "accuracy", ["probe", "metric"]].drop_duplicates().to_numpy()))
    smallest = {}
    for (probe, metric), rows in table.groupby(["probe", "metric"]):
        if (probe, metric) in accuracies:
            reached = rows[rows["final_value"] >= threshold].sort_values("n_params")
            smallest[(probe, metric)] = reached["model"].iloc[0] if len(reached) else None
    table["smallest_size_reaching_threshold"] = [smallest.get((p, m)) for p, m in zip(table["probe"], table["metric"])]
    return table.sort_values(["probe", "metric", "n_params"], ignore_index=True)


def mirage_table(emergence: pd.DataFrame) -> pd.DataFrame:
    """Per run and task: is exact match's transition sharper than its continuous metrics'?
    Flagged where exact match has an onset and no continuous metric shows a transition at
    least half as abrupt (Schaeffer et al. 2023)."""
    cap = emergence[emergence["probe"] == "capability"].copy()
    cap["task"] = cap["metric"].str.split("/").str[0]
    cap["kind"] = cap["metric"].str.split("/").str[1]
    rows = []
    for (run, task), group in cap.groupby(["run", "task"]):
        get = {k: r for k, r in zip(group["kind"], group.itertuples())}
        if "exact_match" not in get:
            continue
        exact = get["exact_match"]
        row = {"run": run, "model": exact.model, "task": task, "exact_match_onset": exact.onset_step,
               "exact_match_abruptness": exact.abruptness}
        sharp_continuous = False
        for kind in CONTINUOUS:
            if kind in get:
                row[f"{kind}_onset"], row[f"{kind}_abruptness"] = get[kind].onset_step, get[kind].abruptness
                a = get[kind].abruptness
                sharp_continuous |= bool(get[kind].has_onset and exact.has_onset and a >= 0.5 * exact.abruptness)
        row["mirage"] = bool(exact.has_onset and not sharp_continuous)
        rows.append(row)
    return pd.DataFrame(rows)


# ---- charts ------------------------------------------------------------------------------
def _step_axis(ax):
    ax.set_xscale("symlog", linthresh=1)  # log steps, with step 0 still on the axis
    ax.set_xlim(left=0)
    ax.set_xlabel("training step")


def _stage_bands(ax, stages, runs, colors: dict | None = None, signals=("llc", ED_PROBE)) -> None:
    """Each stage boundary of `runs` found by `signals` (by default the whole model's: the LLC
    and the essential dynamics; the components' are drawn on the LLC chart) as a shaded band
    over its checkpoint interval."""
    if stages is None or not len(stages):
        return
    shown = stages[stages["run"].isin(list(runs)) & (stages["signal"].isin(signals) if signals else True)]
    for i, b in enumerate(shown.itertuples(index=False)):
        color = (colors or {}).get(b.run, "tab:purple")
        ax.axvspan(b.low_step, b.high_step, color=color, alpha=0.2, linewidth=0,
                   label="stage boundary" if i == 0 else None)


def plot_curves(results, emergence, probe, metric, path: Path, stages=None) -> None:
    """Metric vs step, one line per size (mean over seeds, band = min-max), onset marked,
    stage boundaries shaded."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = results[(results["probe"] == probe) & (results["metric"] == metric)]
    for i, model in enumerate(by_size(rows)):
        stats = rows[rows["model"] == model].groupby("step")["value"].agg(["mean", "min", "max"])
        color = f"C{i}"
        ax.plot(stats.index, stats["mean"], color=color, marker=".", label=model)
        if rows[rows["model"] == model]["seed"].nunique() > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2)
        onsets = emergence[(emergence["model"] == model) & (emergence["probe"] == probe)
                           & (emergence["metric"] == metric) & emergence["has_onset"]]
        for step in onsets["onset_step"]:
            ax.axvline(step, color=color, linestyle="--", linewidth=1)
    chance = rows["chance"].dropna()
    if len(chance):
        ax.axhline(float(chance.mean()), color="grey", linestyle=":", linewidth=1, label="chance")
    _stage_bands(ax, stages, rows["run"].unique())
    _step_axis(ax)
    ax.set_ylabel(metric)
    ax.set_title(f"{probe}: {metric} (dashed: onset; shaded: stages)" if stages is not None and len(stages)
                 else f"{probe}: {metric} (dashed: onset)", fontsize=10)
    ax.legend(title="size")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_heatmap(results, probe, metric, path: Path) -> None:
    rows = results[(results["probe"] == probe) & (results["metric"] == metric)]
    grid = rows.groupby(["model", "step"])["value"].mean().unstack("step").reindex(by_size(rows))
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(grid) + 1.5))
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(grid)), grid.index)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize=7)
    ax.set_xlabel("training step")
    ax.set_title(f"{metric}: size × step")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_onset_vs_compute(emergence, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    onsets = emergence[emergence["has_onset"] & (emergence["probe"] == "capability")] if len(emergence) else emergence
    for i, (metric, rows) in enumerate(onsets.groupby("metric") if len(onsets) else []):
        ax.plot(rows["n_params"], rows["onset_flops_6nd"], marker="o", linestyle="-", color=f"C{i % 10}", label=metric)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("training FLOPs at onset")
    ax.set_title("onset vs compute")
    if len(onsets):
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mean_lines(ax, results, probe, metric, label="{model}", **style) -> None:
    """One line per size (mean over seeds), colored by the size's rank in the whole table."""
    rows = results[(results["probe"] == probe) & (results["metric"] == metric)]
    for i, model in enumerate(by_size(results)):
        mean = rows[rows["model"] == model].groupby("step")["value"].mean()
        if len(mean):
            ax.plot(mean.index, mean.to_numpy(), marker=".", color=f"C{i}", label=label.format(model=model), **style)
    _step_axis(ax)


def plot_mirage(results, task, path: Path) -> None:
    kinds = ["exact_match", "token_accuracy", "answer_logprob"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, kind in zip(axes, kinds):
        _mean_lines(ax, results, "capability", f"{task}/{kind}")
        ax.set_title(f"{task}: {kind}")
    axes[0].legend(title="size")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_generalization(results, task, path: Path, stages=None) -> None:
    """Grokking's picture: exact match on trained items (dashed) vs held-out items (solid),
    beside the weight norm."""
    fig, (accuracy, norm) = plt.subplots(1, 2, figsize=(10, 3.5))
    _mean_lines(accuracy, results, "capability", f"{task}/train_exact_match", "{model} trained", linestyle="--")
    _mean_lines(accuracy, results, "capability", f"{task}/exact_match", "{model} held out")
    accuracy.set_title(f"{task}: exact match, trained vs held-out items")
    accuracy.legend(fontsize=7)
    _mean_lines(norm, results, "weights", "norm/total")
    norm.set_title("weight norm (L2, all parameters)")
    for ax in (accuracy, norm):
        _stage_bands(ax, stages, results["run"].unique())
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_llc(run: str, curves: dict, stages, path: Path) -> None:
    """A run's LLC curves (whole model and components), mean ± standard error over chains.
    Estimates the sampler flags as unhealthy are not points of the curve: they are drawn as
    red crosses, unconnected, without error bars."""
    signals = [sig for (r, sig) in curves if r == run]
    fig, axes = plt.subplots(1, 2 if len(signals) > 1 else 1, figsize=(11 if len(signals) > 1 else 6, 4),
                             squeeze=False)
    panels = [["llc"], [s for s in signals if s != "llc"]] if len(signals) > 1 else [["llc"]]
    flagged = False
    for ax, panel in zip(axes[0], panels):
        for i, signal in enumerate(panel):
            curve = curves.get((run, signal))
            if curve is None:
                continue
            good, bad = curve[curve["healthy"]], curve[~curve["healthy"]]
            color = "black" if signal == "llc" else f"C{i}"
            ax.errorbar(good.index, good["mean"], yerr=good["stderr"], color=color, marker=".", capsize=2,
                        label=signal)
            if len(bad):
                flagged = True
                ax.plot(bad.index, bad["mean"], linestyle="none", marker="x", color="red",
                        label="unhealthy estimate" if not ax.get_legend_handles_labels()[1].count("unhealthy estimate") else None)
        _stage_bands(ax, stages, [run], signals=panel)
        _step_axis(ax)
        ax.set_ylabel("LLC estimate")
        ax.legend(fontsize=7)
    axes[0][0].set_title(f"{run}: LLC" + (" (red x: unhealthy, not an estimate)" if flagged else ""))
    if len(panels) > 1:
        axes[0][1].set_title(f"{run}: LLC of each component")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_trajectory(run: str, traj, stages, path: Path) -> None:
    """The run's outputs across checkpoints in their first principal components, colored by
    step, with some steps written beside their points and the boundaries' checkpoints ringed."""
    k = traj.coords.shape[1]
    pairs = [(0, 1), (0, 2)] if k >= 3 else [(0, 1)] if k >= 2 else []
    if not pairs:
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    logstep = np.log10(traj.steps + 1)
    mine = stages[(stages["run"] == run) & (stages["signal"] == ED_PROBE)] if stages is not None and len(stages) else []
    marked = {0, len(traj.steps) - 1}  # the first and last steps, and the boundaries', written beside their points
    for boundary in mine.itertuples(index=False) if len(mine) else []:
        marked |= set(np.flatnonzero((traj.steps >= boundary.low_step) & (traj.steps <= boundary.high_step)).tolist())
    for ax, (a, b) in zip(axes[0], pairs):
        ax.plot(traj.coords[:, a], traj.coords[:, b], color="grey", linewidth=0.8, zorder=1)
        points = ax.scatter(traj.coords[:, a], traj.coords[:, b], c=logstep, cmap="viridis", s=18, zorder=2)
        for i in sorted(marked):
            ax.annotate(f"{traj.steps[i]:.0f}", (traj.coords[i, a], traj.coords[i, b]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        for j, boundary in enumerate(mine.itertuples(index=False) if len(mine) else []):
            inside = (traj.steps >= boundary.low_step) & (traj.steps <= boundary.high_step)
            ax.scatter(traj.coords[inside, a], traj.coords[inside, b], s=90, facecolors="none", edgecolors="red",
                       zorder=3, label="boundary checkpoints" if j == 0 else None)
        ax.set_xlabel(f"PC{a + 1} ({traj.explained[a]:.0%} of variance)")
        ax.set_ylabel(f"PC{b + 1} ({traj.explained[b]:.0%})")
        if len(mine):
            ax.legend(fontsize=7)
    fig.colorbar(points, ax=axes[0][-1], label="log10(step + 1)")
    axes[0][0].set_title(f"{run}: essential dynamics (log-probs on the probe set)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def unhealthy_table(results) -> pd.DataFrame:
    """The LLC estimates the sampler flags, with why."""
    rows = results[results["probe"] == LLC_PROBE]
    if not len(rows):
        return pd.DataFrame(columns=["run", "step", "signal", "value", "drift", "diverged", "negative"])
    wide = rows.pivot_table(index=["run", "step"], columns="metric", values="value", aggfunc="first")
    out = []
    for metric in [m for m in wide.columns if m == "healthy" or m.endswith("/healthy")]:
        prefix = metric[: -len("healthy")]
        bad = wide[wide[metric] < 0.5]
        for (run, step), r in bad.iterrows():
            out.append({"run": run, "step": step, "signal": f"llc/{prefix[:-1]}" if prefix else "llc",
                        "value": r.get(f"{prefix}mean"), "drift": r.get(f"{prefix}drift"),
                        "diverged": r.get(f"{prefix}diverged"), "negative": r.get(f"{prefix}negative")})
    return pd.DataFrame(out, columns=["run", "step", "signal", "value", "drift", "diverged", "negative"])


def tasks_with_training_items(results) -> list[str]:
    metrics = results.loc[results["probe"] == "capability", "metric"].unique()
    return sorted(m.split("/")[0] for m in metrics if m.endswith("/train_exact_match"))


# ---- the report -------------------------------------------------------------------------
def write_report(experiment_dir: Path, n_boot: int = 100, fraction: float = 0.5) -> Path:
    """Emergence tables, charts and index.html under <experiment>/observatory/."""
    out = store.output_dir(experiment_dir)
    results = pd.read_parquet(out / "results.parquet")
    if results.empty:
        raise ValueError(f"{out / 'results.parquet'} is empty: run python -m observatory first")
    capabilities = results[~results["probe"].isin([LLC_PROBE, ED_PROBE])]  # the signals of stages, not onsets
    emergence = emergence_table(capabilities, partial(store.read_item_results, experiment_dir), fraction=fraction,
                                n_boot=n_boot)
    scale, mirage = scale_table(capabilities, emergence), mirage_table(emergence)
    over_seeds = onsets_over_seeds(capabilities, fraction=fraction, n_boot=n_boot)
    stages, trajectories = stage_table(results, partial(store.read_item_results, experiment_dir, probe=ED_PROBE),
                                       n_boot=n_boot)
    stage_onsets = onsets_near_boundaries(stages, emergence, headline_metrics(capabilities))
    unhealthy = unhealthy_table(results)
    tables = {"emergence": emergence, "scale": scale, "mirage": mirage, "onsets_over_seeds": over_seeds,
              "stages": stages, "stage_onsets": stage_onsets, "llc_unhealthy": unhealthy}
    for name, table in tables.items():
        store.write_parquet(out / f"{name}.parquet", table)
        table.to_csv(out / f"{name}.csv", index=False)
    (out / "emergence.json").write_text(emergence.to_json(orient="records", indent=1))

    charts = out / "charts"
    charts.mkdir(exist_ok=True)
    figures = []
    for probe, metric in headline_metrics(results):
        slug = f"{probe}-{metric}".replace("/", "-")
        plot_curves(results, emergence, probe, metric, charts / f"curve-{slug}.png", stages)
        figures.append((f"{probe}: {metric} vs step", charts / f"curve-{slug}.png"))
        if results["model"].nunique() > 1 and metric.endswith(("exact_match", "token_accuracy", "agreement")):
            plot_heatmap(results, probe, metric, charts / f"heatmap-{slug}.png")
            figures.append((f"{metric}: size × step", charts / f"heatmap-{slug}.png"))
    plot_onset_vs_compute(emergence, charts / "onset-vs-compute.png")
    figures.append(("onset vs compute", charts / "onset-vs-compute.png"))
    for task in sorted(mirage["task"].unique()) if len(mirage) else []:
        plot_mirage(results, task, charts / f"mirage-{task}.png")
        figures.append((f"{task}: exact match vs continuous metrics", charts / f"mirage-{task}.png"))
    for task in tasks_with_training_items(results):
        plot_generalization(results, task, charts / f"generalization-{task}.png", stages)
        figures.append((f"{task}: trained vs held-out items", charts / f"generalization-{task}.png"))
    curves = llc_curves(results)
    for run in sorted({r for r, _ in curves}):
        plot_llc(run, curves, stages, charts / f"llc-{run}.png")
        figures.append((f"{run}: local learning coefficient", charts / f"llc-{run}.png"))
    for run, traj in sorted(trajectories.items()):
        plot_trajectory(run, traj, stages, charts / f"essential-dynamics-{run}.png")
        if (charts / f"essential-dynamics-{run}.png").exists():
            figures.append((f"{run}: essential dynamics", charts / f"essential-dynamics-{run}.png"))
    return write_index(out, results, emergence, mirage, over_seeds, figures, stage_onsets, unhealthy)


def _stages_html(stage_onsets, unhealthy) -> str:
    """The stage boundaries against the capability onsets, and the flagged LLC estimates."""
    if stage_onsets is None:
        return ""
    parts = ["<h2>Developmental stages</h2>",
             "<p>Boundaries found without a chosen metric: change points of the LLC curve (healthy estimates "
             "only) and turning points of the essential-dynamics trajectory, each between two probed "
             "checkpoints (low_step, high_step; widened by the chains' bootstrap for the LLC). For each, the "
             "onsets (capability metrics and headline curves) within one checkpoint interval of it. Tables: "
             "stages.csv, stage_onsets.csv.</p>"]
    if len(stage_onsets):
        parts.append(_table_html(stage_onsets, list(stage_onsets.columns)))
    else:
        parts.append("<p>No stage boundary: every signal is flat or within its noise.</p>")
    if unhealthy is not None and len(unhealthy):
        parts += ["<h2>LLC estimates flagged unhealthy (left out of curves and stages)</h2>",
                  "<p>drift: how far the chains' loss still moved across the draws, as a share of its rise; "
                  "diverged / negative: the share of chains whose loss blew up or whose estimate is below 0.</p>",
                  _table_html(unhealthy, list(unhealthy.columns))]
    return "\n".join(parts)


def _table_html(table: pd.DataFrame, columns: list[str]) -> str:
    shown = table[[c for c in columns if c in table]]
    return shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="—", border=0, classes="t")


def write_index(out: Path, results, emergence, mirage, over_seeds, figures, stage_onsets=None, unhealthy=None) -> Path:
    """One self-contained page: the charts are embedded, the tables inline."""
    experiment = results["experiment"].iloc[0]
    onsets = emergence[emergence["has_onset"]].sort_values(["probe", "metric", "n_params"])
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{html.escape(title)} '
        f'(<a href="charts/{path.name}">{path.name}</a>)</figcaption></figure>' for title, path in figures)
    summary = {"runs": int(results["run"].nunique()), "checkpoints": int(results[["run", "step"]].drop_duplicates().shape[0]),
               "curves": len(emergence), "with onset": int(emergence["has_onset"].sum())}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>observatory: {html.escape(experiment)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}} figure{{display:inline-block;margin:.5em}}
img{{max-width:600px}} table.t{{border-collapse:collapse;font-size:12px}} .t td,.t th{{padding:2px 6px;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>Emergence report: {html.escape(experiment)}</h1>
<p>{html.escape(json.dumps(summary))}. Onset: where a curve last crosses half of its rise on a
log-step axis; no onset for flat, noisy or falling curves. Intervals are 95% bootstrap intervals:
of the onset over resampled probe items (onset_ci_*), of the sigmoid midpoint center_step (ci_*,
over items or over the fit's residuals: ci_method). Tables: emergence.csv, scale.csv, mirage.csv.</p>
<h2>Onsets</h2>
{_table_html(onsets, ["run", "probe", "metric", "onset_step", "onset_ci_low_step", "onset_ci_high_step", "onset_tokens", "onset_flops_6nd", "center_step", "ci_low_step", "ci_high_step", "ci_method", "width_decades", "abruptness", "final_value"])}
<h2>Onsets of the seed-mean curves, with intervals from resampling seeds</h2>
{_table_html(over_seeds[over_seeds["has_onset"]] if len(over_seeds) else over_seeds, ["model", "probe", "metric", "n_seeds", "onset_step", "ci_low_step", "ci_high_step", "onset_found_in"])}
<h2>Exact match vs continuous metrics</h2>
{_table_html(mirage, list(mirage.columns))}
{_stages_html(stage_onsets, unhealthy)}
<h2>Charts</h2>
{images}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index


def main(cfg) -> int:
    """`python -m observatory.report [experiment=<name> | experiment_name=<name>] [checkpoints_dir=…]`:
    rebuild the report from an experiment's stored results, without probing anything."""
    experiment_dir = Path(cfg.checkpoints_dir) / cfg.experiment_name
    results = store.output_dir(experiment_dir) / "results.parquet"
    if not results.exists():
        print(f"error: {results} does not exist; probe the checkpoints first: python -m observatory "
              f"checkpoints_dir={cfg.checkpoints_dir} experiment_name={cfg.experiment_name}", file=sys.stderr)
        return 2
    try:
        index = write_report(experiment_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):  # no run dir: only reads
        sys.exit(main(compose(config_name="observatory", overrides=sys.argv[1:])))
