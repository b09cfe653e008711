"""From the results table to "when did it appear?": the emergence table, the across-scale and
metric-choice ("mirage") tables, PNG charts and a self-contained index.html."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from observatory import store  # noqa: E402
from observatory.discovery import experiment_dir  # noqa: E402
from observatory.emergence import emergence_table, headline_metrics, onsets_over_seeds  # noqa: E402
from observatory.findings import findings, headline_text, metric_label, onsets_by_size, sizes, tasks  # noqa: E402
from observatory.page import Page, write  # noqa: E402
from observatory.stages import ED_PROBE, LLC_PROBE, llc_curves, onsets_near_boundaries, stage_table  # noqa: E402

CONTINUOUS = ("token_accuracy", "answer_logprob", "brier")


def by_size(results: pd.DataFrame) -> list[str]:
    return list(results.sort_values("n_params")["model"].drop_duplicates())


def scale_table(results: pd.DataFrame, emergence: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per capability and size (mean over seeds): final value, onset, and for accuracy-like
    metrics the smallest size whose final value reaches `threshold`."""
    last = results[results["step"] == results.groupby("run")["step"].transform("max")]
    finals = last.groupby(["probe", "metric", "model", "n_params"], as_index=False)["value"].mean()
    at_onset = ["onset_step", "onset_tokens", "onset_flops_6nd"]
    onsets = emergence.groupby(["probe", "metric", "model"], as_index=False)[at_onset].mean() \
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


def plot_onset_vs_compute(results, emergence, path: Path) -> None:
    """Onset FLOPs (6ND) against non-embedding parameters, one panel per task with a transition:
    its headline and continuous metric, each run a point, a line through the sizes' medians."""
    onsets = emergence[emergence["has_onset"] & (emergence["probe"] == "capability")] if len(emergence) else emergence
    shown = [t for t in tasks(results) if len(onsets) and onsets["metric"].isin(t.metrics).any()]
    cols = max(1, min(3, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows + 0.7), sharex=True, sharey=True, squeeze=False)
    n_ne = results.drop_duplicates("run").set_index("run")["n_params_non_embedding"]
    for ax, task in zip(axes.flat, shown):
        for i, metric in enumerate(task.metrics):
            rows_ = onsets[onsets["metric"] == metric].assign(n=lambda t: t["run"].map(n_ne))
            if not len(rows_):
                continue
            role = "headline" if i == 0 else "continuous"
            ax.scatter(rows_["n"], rows_["onset_flops_6nd"], color=f"C{i}", s=18, label=f"{role} metric, each run")
            medians = rows_.groupby("n")["onset_flops_6nd"].median()
            ax.plot(medians.index, medians.to_numpy(), color=f"C{i}", label=f"{role} metric, median over seeds")
        ax.set_title(f"{task.name}: {' vs '.join(metric_label(m) for m in task.metrics)}", fontsize=9)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2×10^4, 3×10^4, ... overlap
    for ax in axes[-1]:
        ax.set_xlabel("parameters (non-embedding)")
    for ax in axes[:, 0]:
        ax.set_ylabel("FLOPs at onset (6·N·D)")
    if not shown:
        axes[0, 0].set_title("onset vs compute: no transitions")
    handles = [Line2D([], [], color=f"C{i}", marker="o", markersize=4, label=f"{role} metric: each run (dots), "
                      "median over seeds (line)") for i, role in enumerate(("headline", "continuous"))] if shown else []
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 1))
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
    by_size = onsets_by_size(emergence, over_seeds)
    stages, trajectories = stage_table(results, partial(store.read_item_results, experiment_dir, probe=ED_PROBE),
                                       n_boot=n_boot)
    tables = {"emergence": emergence, "scale": scale, "mirage": mirage, "onsets_over_seeds": over_seeds,
              "onsets_by_size": by_size, "stages": stages,
              "stage_onsets": onsets_near_boundaries(stages, emergence, headline_metrics(capabilities)),
              "llc_unhealthy": unhealthy_table(results)}
    for name, table in tables.items():
        if name == "onsets_by_size":  # each seed's onset as text: "0: 2528; 1: —"
            table = table.assign(per_seed=["; ".join(f"{s}: {'—' if o is None else f'{o:.6g}'}" for s, o in seeds)
                                           for seeds in table["per_seed"]],
                                 reasons=["; ".join(r) for r in table["reasons"]], runs=[" ".join(r) for r in table["runs"]])
        store.write_parquet(out / f"{name}.parquet", table)
        table.to_csv(out / f"{name}.csv", index=False)
    (out / "emergence.json").write_text(emergence.to_json(orient="records", indent=1))
    found = findings(capabilities, by_size, mirage)
    # the page's headline in plain sentences, for the console's closing summary
    (out / "headline.txt").write_text("".join(f"{line}\n" for line in headline_text(found)))
    llc = llc_curves(results)
    write_charts(out, capabilities, emergence, mirage, stages)
    write_stage_charts(out, llc, stages, trajectories)
    return write_page(out, capabilities, tables, found, llc, trajectories)


def write_charts(out: Path, results, emergence, mirage, stages) -> list[Path]:
    """The static PNG charts (charts/*.png: the docs' figures and W&B's images)."""
    charts = out / "charts"
    charts.mkdir(exist_ok=True)
    written = []
    for probe, metric in headline_metrics(results):
        slug = f"{probe}-{metric}".replace("/", "-")
        plot_curves(results, emergence, probe, metric, charts / f"curve-{slug}.png", stages)
        written.append(charts / f"curve-{slug}.png")
        if results["model"].nunique() > 1 and metric.endswith(("exact_match", "token_accuracy", "agreement")):
            plot_heatmap(results, probe, metric, charts / f"heatmap-{slug}.png")
            written.append(charts / f"heatmap-{slug}.png")
    plot_onset_vs_compute(results, emergence, charts / "onset-vs-compute.png")
    written.append(charts / "onset-vs-compute.png")
    for task in sorted(mirage["task"].unique()) if len(mirage) else []:
        plot_mirage(results, task, charts / f"mirage-{task}.png")
        written.append(charts / f"mirage-{task}.png")
    for task in tasks_with_training_items(results):
        plot_generalization(results, task, charts / f"generalization-{task}.png", stages)
        written.append(charts / f"generalization-{task}.png")
    return written


def write_stage_charts(out: Path, llc: dict, stages, trajectories) -> list[Path]:
    """The LLC curves ((run, signal) -> curve) and essential-dynamics trajectories of every run, as PNG."""
    charts, written = out / "charts", []
    for run in sorted({r for r, _ in llc}):
        plot_llc(run, llc, stages, charts / f"llc-{run}.png")
        written.append(charts / f"llc-{run}.png")
    for run, traj in sorted(trajectories.items()):
        plot_trajectory(run, traj, stages, charts / f"essential-dynamics-{run}.png")
        if (charts / f"essential-dynamics-{run}.png").exists():
            written.append(charts / f"essential-dynamics-{run}.png")
    return written


def write_page(out: Path, results: pd.DataFrame, tables: dict[str, pd.DataFrame], found: list, llc: dict,
               trajectories: dict) -> Path:
    """index.html from the capability results, the tables and the stage signals (observatory/page.py)."""
    page = Page(experiment=str(results["experiment"].iloc[0]), results=results, emergence=tables["emergence"],
                scale=tables["scale"], mirage=tables["mirage"], over_seeds=tables["onsets_over_seeds"],
                by_size=tables["onsets_by_size"], sizes=sizes(results), found=found, stages=tables["stages"],
                stage_onsets=tables["stage_onsets"], llc_unhealthy=tables["llc_unhealthy"],
                llc=llc, trajectories=trajectories)
    return write(page, out / "index.html")


def main(cfg) -> int:
    """`python -m observatory.report [experiment=<name> | experiment_name=<name>] [checkpoints_dir=…]`:
    rebuild the report from an experiment's stored results, without probing anything."""
    experiment = experiment_dir(cfg)
    results = store.output_dir(experiment) / "results.parquet"
    if not results.exists():
        print(f"error: {results} does not exist; probe the checkpoints first: python -m observatory "
              f"checkpoints_dir={cfg.checkpoints_dir} experiment_name={cfg.experiment_name}", file=sys.stderr)
        return 2
    try:
        index = write_report(experiment)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):  # no run dir: only reads
        sys.exit(main(compose(config_name="observatory", overrides=sys.argv[1:])))
