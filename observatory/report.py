"""From the results table to "when did it appear?": the emergence table, the across-scale and
metric-choice ("mirage") tables, PNG charts and a self-contained index.html."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from observatory import store  # noqa: E402
from observatory.emergence import emergence_table, headline_metrics, onsets_over_seeds  # noqa: E402
from observatory.figures import STAGE_COLUMNS  # noqa: E402
from observatory.findings import metric_label, onsets_by_size, sizes, tasks  # noqa: E402
from observatory.page import Page, write  # noqa: E402

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


def plot_curves(results, emergence, probe, metric, path: Path) -> None:
    """Metric vs step, one line per size (mean over seeds, band = min-max), onset marked."""
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
    _step_axis(ax)
    ax.set_ylabel(metric)
    ax.set_title(f"{probe}: {metric} (dashed: onset)")
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


def plot_generalization(results, task, path: Path) -> None:
    """Grokking's picture: exact match on trained items (dashed) vs held-out items (solid),
    beside the weight norm."""
    fig, (accuracy, norm) = plt.subplots(1, 2, figsize=(10, 3.5))
    _mean_lines(accuracy, results, "capability", f"{task}/train_exact_match", "{model} trained", linestyle="--")
    _mean_lines(accuracy, results, "capability", f"{task}/exact_match", "{model} held out")
    accuracy.set_title(f"{task}: exact match, trained vs held-out items")
    accuracy.legend(fontsize=7)
    _mean_lines(norm, results, "weights", "norm/total")
    norm.set_title("weight norm (L2, all parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
    emergence = emergence_table(results, partial(store.read_item_results, experiment_dir), fraction=fraction,
                                n_boot=n_boot)
    scale, mirage = scale_table(results, emergence), mirage_table(emergence)
    over_seeds = onsets_over_seeds(results, fraction=fraction, n_boot=n_boot)
    by_size = onsets_by_size(emergence, over_seeds)
    tables = {"emergence": emergence, "scale": scale, "mirage": mirage, "onsets_over_seeds": over_seeds,
              "onsets_by_size": by_size}
    for name, table in tables.items():
        if name == "onsets_by_size":  # each seed's onset as text: "0: 2528; 1: —"
            table = table.assign(per_seed=["; ".join(f"{s}: {'—' if o is None else f'{o:.6g}'}" for s, o in seeds)
                                           for seeds in table["per_seed"]],
                                 reasons=["; ".join(r) for r in table["reasons"]], runs=[" ".join(r) for r in table["runs"]])
        store.write_parquet(out / f"{name}.parquet", table)
        table.to_csv(out / f"{name}.csv", index=False)
    (out / "emergence.json").write_text(emergence.to_json(orient="records", indent=1))
    write_charts(out, results, emergence, mirage)
    return write_page(out, results, tables)


def write_charts(out: Path, results, emergence, mirage) -> list[Path]:
    """The static PNG charts (charts/*.png: the docs' figures and W&B's images)."""
    charts = out / "charts"
    charts.mkdir(exist_ok=True)
    written = []
    for probe, metric in headline_metrics(results):
        slug = f"{probe}-{metric}".replace("/", "-")
        plot_curves(results, emergence, probe, metric, charts / f"curve-{slug}.png")
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
        plot_generalization(results, task, charts / f"generalization-{task}.png")
        written.append(charts / f"generalization-{task}.png")
    return written


STAGE_NAMES = {"boundary_step": "step", "low_step": "step_low", "high_step": "step_high"}  # the devinterp branch's


def read_stages(out: Path) -> pd.DataFrame | None:
    """The stage boundaries of the developmental-signals analysis (stages.parquet, else
    stages.csv: run, step, step_low, step_high, signal; also read under the names
    boundary_step, low_step, high_step), or None when there are none."""
    for name, read in (("stages.parquet", pd.read_parquet), ("stages.csv", pd.read_csv)):
        path = out / name
        if path.exists():
            table = read(path)
            table = table.rename(columns={k: v for k, v in STAGE_NAMES.items() if v not in table.columns})
            missing = [c for c in STAGE_COLUMNS if c not in table.columns]
            if missing:
                print(f"warning: {path} has no column {', '.join(missing)}; stage boundaries not drawn", file=sys.stderr)
                return None
            return table[STAGE_COLUMNS].dropna(subset=["step", "step_low", "step_high"])
    return None


def write_page(out: Path, results: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> Path:
    """index.html from the results and the tables (observatory/page.py)."""
    page = Page(experiment=str(results["experiment"].iloc[0]), results=results, emergence=tables["emergence"],
                scale=tables["scale"], mirage=tables["mirage"], over_seeds=tables["onsets_over_seeds"],
                by_size=tables["onsets_by_size"], sizes=sizes(results), stages=read_stages(out))
    return write(page, out / "index.html")


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
