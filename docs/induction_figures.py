"""The figures of docs/induction.md, from a run of the induction experiment and its probe
results: the curves of the transition on one step axis, and the attention pattern of the
strongest induction head on one repeated random sequence [BOS] r r, before and after.

    python docs/induction_figures.py checkpoints/induction/2l-attn-d128h2-s0 --steps 150 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from observatory.probes.attention import head_scores, induction_positions  # noqa: E402
from observatory.probes.context import repeat_layout, repeated_random_tokens  # noqa: E402
from train import rundir  # noqa: E402
from train.tokenizer import SPECIAL_TOKENS  # noqa: E402


def patterns(run_dir: Path, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """(layers, heads, T, T) attention patterns of the checkpoint on one sequence."""
    model = rundir.load_model(run_dir, step)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layer)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[name][0] for name in names])


CURVES = [("attention", "prev_token/max", "prev-token head"), ("attention", "induction/max", "induction head"),
          ("capability", "induction/token_accuracy", "copy accuracy"), ("loss", "icl_score", "ICL score (nats)"),
          ("loss", "all", "held-out loss (nats)")]


def plot_curves(run_dir: Path, out: Path) -> None:
    """The transition's curves, one panel each, on one step axis, with each curve's onset (where
    it crosses half its rise) and steepest point (where it moves fastest per decade of steps)."""
    observatory = run_dir.parent / "observatory"
    results = pd.read_parquet(observatory / "results.parquet")
    onsets = pd.read_parquet(observatory / "tables" / "emergence.parquet")
    results, onsets = results[results["run"] == run_dir.name], onsets[onsets["run"] == run_dir.name]
    fig, axes = plt.subplots(len(CURVES), 1, figsize=(7, 9), sharex=True)
    for ax, (probe, metric, label) in zip(axes, CURVES):
        curve = results[(results["probe"] == probe) & (results["metric"] == metric)].sort_values("step")
        ax.plot(curve["step"], curve["value"], marker=".", color="C0")
        ax.fill_between(curve["step"], curve["value"] - 2 * curve["stderr"], curve["value"] + 2 * curve["stderr"],
                        color="C0", alpha=0.2)
        onset = onsets[(onsets["probe"] == probe) & (onsets["metric"] == metric) & onsets["has_onset"]]
        low, top = ax.get_ylim()
        for step, steepest in zip(onset["onset_step"], onset["steepest_step"]):
            ax.axvline(step, color="C3", linestyle="--", linewidth=1)
            ax.axvline(steepest, color="0.4", linestyle=":", linewidth=1)
            ax.text(step, top, f" onset {step:.0f} ", color="C3", va="top", fontsize=8,
                    ha="right" if step < steepest else "left")
            ax.text(steepest, top - 0.15 * (top - low), f" steepest {steepest:.0f} ", color="0.4", va="top", fontsize=8,
                    ha="left" if step < steepest else "right")
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xscale("symlog", linthresh=10)
    axes[-1].set_xlim(left=0)
    axes[-1].set_xlabel("training step (band: 2 standard errors)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs=2, required=True, help="before and after")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    plot_curves(args.run_dir, args.out / "induction-curves.png")
    vocab = Tokenizer.from_file(str(args.run_dir / rundir.TOKENIZER)).get_vocab()
    ordinary = sorted(i for t, i in vocab.items() if t not in SPECIAL_TOKENS)
    n_ctx = rundir.read_run_json(args.run_dir)["model_config"]["n_ctx"]
    tokens = repeated_random_tokens(1, n_ctx, ordinary, vocab["[BOS]"], seed=0)  # one sequence of the probe's kind
    layout = repeat_layout(1, n_ctx, seed=0)
    positions = induction_positions(tokens, layout)
    start, length = int(layout.start[0]), int(layout.length[0])
    before, after = (patterns(args.run_dir, step, tokens) for step in args.steps)
    induction = torch.stack([head_scores(layer[None], positions)[0] for layer in after])  # (layers, heads)
    layer, head = divmod(int(induction.argmax()), induction.shape[1])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, step, pattern in zip(axes, args.steps, (before, after)):
        score = head_scores(pattern[layer][None], positions)[0, head]
        ax.imshow(pattern[layer, head], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"step {step}: L{layer}H{head}, induction score {score:.2f}")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        for edge in (start - 0.5, start + length - 0.5, start + 2 * length - 0.5):  # the copies' bounds
            ax.axvline(edge, color="w", linewidth=0.5)
            ax.axhline(edge, color="w", linewidth=0.5)
    fig.suptitle(f"[BOS] filler r_1..r_{length} r_1..r_{length} filler: an induction head attends from r_i of the "
                 "second copy to r_(i+1) of the first (the off-diagonal stripe)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "induction-pattern.png", dpi=90)
    print(f"wrote {args.out}/induction-curves.png and induction-pattern.png (L{layer}H{head})")


if __name__ == "__main__":
    main()
