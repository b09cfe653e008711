"""Export one checkpoint as a Hugging Face GPT-2 model directory.

    python -m train.export checkpoints/quickstart/13k-s0 step=2000 out=hf/13k-s0

writes config.json, model.safetensors and a fast tokenizer (tokenizer.json and its config,
from the run's own vocabulary), so that `AutoModelForCausalLM.from_pretrained(out)` and
`AutoTokenizer.from_pretrained(out)` load it offline: the road into TransformerLens 4
(TransformerBridge), lm-evaluation-harness and `transformers` pipelines. Needs the `hf`
extra (`pip install -e '.[hf]'`). Without `step=` the run's last checkpoint is exported.

The mapping is exact: our blocks are GPT-2's (pre-LayerNorm, fused qkv, exact GELU, learned
positions, no bias in the unembedding). An attention-only model becomes a GPT-2 whose MLPs
are all zero; a model without LayerNorm, or with its positions in the queries and keys alone
(`positions="qk"`), has no GPT-2 equivalent and is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from train import rundir
from train.model import GPT

LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which our blocks use


class ExportError(ValueError):
    """A checkpoint that GPT-2 cannot express, or a command line that names no checkpoint."""


def gpt2_config(model: GPT, tokenizer_ids: dict[str, int]):
    from transformers import GPT2Config

    cfg = model.cfg
    if not cfg.layer_norm:
        raise ExportError("this model has no LayerNorm (model.layer_norm=false, the grokking model); GPT-2 always "
                          "normalizes, so no GPT-2 directory computes what it computes")
    if cfg.positions != "residual":
        raise ExportError(f"this model adds its positions to the queries and keys alone (model.positions="
                          f"{cfg.positions}); GPT-2 adds them to the residual stream once, so no GPT-2 directory "
                          "computes what it computes")
    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, n_inner=cfg.d_mlp, activation_function="gelu", layer_norm_epsilon=LN_EPS,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=cfg.tied_embeddings,
                      bos_token_id=tokenizer_ids["[BOS]"], eos_token_id=tokenizer_ids["[EOS]"],
                      pad_token_id=tokenizer_ids["[PAD]"])


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our parameters under GPT-2's names. GPT-2's Conv1D stores (in, out): our Linear
    weights (out, in) are transposed."""
    cfg, ours = model.cfg, model.state_dict()
    state = {"transformer.wte.weight": ours["wte.weight"], "transformer.wpe.weight": ours["wpe.weight"],
             "transformer.ln_f.weight": ours["ln_final.weight"], "transformer.ln_f.bias": ours["ln_final.bias"],
             "lm_head.weight": ours["lm_head.weight"]}
    for i in range(cfg.n_layer):
        ours_, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        state |= {theirs + "ln_1.weight": ours[ours_ + "ln1.weight"], theirs + "ln_1.bias": ours[ours_ + "ln1.bias"],
                  theirs + "attn.c_attn.weight": ours[ours_ + "attn.qkv.weight"].T,
                  theirs + "attn.c_attn.bias": ours[ours_ + "attn.qkv.bias"],
                  theirs + "attn.c_proj.weight": ours[ours_ + "attn.out.weight"].T,
                  theirs + "attn.c_proj.bias": ours[ours_ + "attn.out.bias"]}
        if cfg.attn_only:  # no MLP: GPT-2's MLP with zero weights adds exactly nothing
            d, m = cfg.d_model, cfg.d_mlp
            mlp = {"ln_2.weight": torch.ones(d), "ln_2.bias": torch.zeros(d), "mlp.c_fc.weight": torch.zeros(d, m),
                   "mlp.c_fc.bias": torch.zeros(m), "mlp.c_proj.weight": torch.zeros(m, d),
                   "mlp.c_proj.bias": torch.zeros(d)}
        else:
            mlp = {"ln_2.weight": ours[ours_ + "ln2.weight"], "ln_2.bias": ours[ours_ + "ln2.bias"],
                   "mlp.c_fc.weight": ours[ours_ + "mlp.fc_in.weight"].T, "mlp.c_fc.bias": ours[ours_ + "mlp.fc_in.bias"],
                   "mlp.c_proj.weight": ours[ours_ + "mlp.fc_out.weight"].T,
                   "mlp.c_proj.bias": ours[ours_ + "mlp.fc_out.bias"]}
        state |= {theirs + k: v for k, v in mlp.items()}
    return {k: v.contiguous() for k, v in state.items()}


def export(run_dir: Path, out: Path, step: int | None = None) -> Path:
    """Write the Hugging Face directory of `run_dir`'s checkpoint at `step` (default: the last)."""
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    run_dir, out = Path(run_dir), Path(out)
    steps = [row["step"] for row in rundir.read_manifest(run_dir)]
    if not steps:
        raise ExportError(f"{run_dir} has no checkpoints ({rundir.MANIFEST} lists none); train it first")
    model = rundir.load_model(run_dir, steps[-1] if step is None else step)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(run_dir / rundir.TOKENIZER), bos_token="[BOS]",
                                        eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]",
                                        model_max_length=model.cfg.n_ctx)
    hf = GPT2LMHeadModel(gpt2_config(model, tokenizer.get_vocab()))
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]  # GPT-2's mask buffers
    if missing or unexpected:  # a mapping bug, never a user error
        raise RuntimeError(f"GPT-2 mapping is incomplete: missing {missing}, unexpected {unexpected}")
    hf.eval()
    hf.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str]) -> int:
    usage = "usage: python -m train.export <run dir> [step=<N>] out=<dir>"
    options = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    if len(argv) < 1 or "=" in argv[0] or "out" not in options or set(options) - {"step", "out"}:
        print(usage, file=sys.stderr)
        return 2
    try:
        step = int(options["step"]) if "step" in options else None
        out = export(Path(argv[0]), Path(options["out"]), step)
    except (ExportError, rundir.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}) and AutoTokenizer load it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
