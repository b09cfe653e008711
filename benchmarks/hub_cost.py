"""What probing a public suite costs per revision on this machine, measured on random models of
Pythia's shapes (no network here: the hub's weights cannot be downloaded, so the models are
built locally and laid into a hub cache as the hub lays a download, tests/fake_hub.py): the
time to load a revision (sha256 check, Hugging Face model, TransformerBridge, integrity
fingerprint) and to probe it (the probes that apply to a hub model, hub.text=kjv, n_ctx 512).
Download time is not measured; the weight files' sizes are printed. With `--llc-steps K`, also
the LLC probe's sampler (conf/probes/llc/default.yaml, its batch of blocks of n_ctx + 1 tokens
of hub.text) on the last revision: the seconds of K SGLD steps of all its chains, measured, and
what the settings' burn-in + draws would take at that rate (arithmetic, not measured).

    python -m benchmarks.hub_cost [--sizes 14m 70m] [--revisions 3] [--llc-steps 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # Pythia's published configs: hidden size, layers, heads (MLP 4x, vocabulary 50304, context 2048)
    "14m": (128, 6, 4), "31m": (256, 6, 8), "70m": (512, 6, 8), "160m": (768, 12, 12)}


def pythia_like(size: str, seed: int):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hidden, layers, heads = SHAPES[size]
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                                            num_attention_heads=heads, intermediate_size=4 * hidden,
                                            max_position_embeddings=2048, rotary_pct=0.25, bos_token_id=0,
                                            eos_token_id=0))


def kjv_tokenizer(folder: Path, size: int = 50277):
    """A word-level tokenizer of the bundled Bible's words, padded to Pythia's vocabulary size."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from train.text import BUNDLED, bundled_file

    assert "kjv" in BUNDLED
    words = {}
    with open(bundled_file("kjv", folder / "corpora")) as f:
        for line in f:
            for w in json.loads(line)["text"].split():
                words.setdefault(w, len(words) + 1)
    vocab = {"<|endoftext|>": 0} | {w: i for w, i in words.items() if i < size}
    vocab |= {f"<unused{i}>": i for i in range(len(vocab), size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>").save_pretrained(folder / "tok")
    return folder / "tok"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["14m", "70m"], choices=list(SHAPES))
    parser.add_argument("--revisions", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (batch_size=)")
    parser.add_argument("--llc-steps", type=int, default=0, help="time this many SGLD steps of the LLC probe (0: none)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    os.environ.update(HF_HUB_CACHE=str(root / "hub"), HF_HUB_OFFLINE="1")  # before huggingface_hub reads them
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch
    from fake_hub import publish_model
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from observatory.sweep.discovery import list_checkpoints, load
    from observatory.sweep.runner import RunInputs, probe_checkpoint, probes_for, register_hub_repo

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; weights float32 (the hub's Pythia files: float16)")
    tok = kjv_tokenizer(root)
    for size in args.sizes:
        repo = f"EleutherAI/pythia-{size}"
        for k in range(args.revisions):
            publish_model(root / "hub", repo, f"step{1000 * k}", pythia_like(size, k), tok)
        with initialize_config_module(config_module="conf", version_base="1.3"):
            cfg = compose(config_name="observatory", overrides=[f"checkpoints_dir={root / 'ckpt'}", f"experiment_name={size}",
                                                                f"hub.repo={repo}", "hub.text=kjv"])
        register_hub_repo(cfg)
        run_dir = root / "ckpt" / size / f"pythia-{size}"
        probes = probes_for(run_dir, OmegaConf.to_container(cfg.probes, resolve=True))
        inputs = RunInputs.load(run_dir, probes)
        loads, probing = [], []
        for ckpt in list_checkpoints(run_dir):
            t = time.perf_counter()
            model = load(ckpt)
            loads.append(time.perf_counter() - t)
            t = time.perf_counter()
            probe_checkpoint(model, inputs, probes, args.batch_size)
            probing.append(time.perf_counter() - t)
        mb = sum(p.stat().st_size for p in (root / "hub").glob(f"models--EleutherAI--pythia-{size}/blobs/*")
                 if p.stat().st_size > 1e6) / args.revisions / 1e6
        n = sum(p.numel() for p in model.weights.values())
        load_s, probe_s = sorted(loads)[len(loads) // 2], sorted(probing)[len(probing) // 2]
        print(f"pythia-{size} shape ({n / 1e6:.1f}M parameters, {mb:.0f} MB of float32 weights per revision): "
              f"load {load_s:.1f} s, probe {probe_s:.1f} s per revision "
              f"(median of {args.revisions}; batch_size={args.batch_size}; probes: {', '.join(probes)}; "
              f"{len(inputs.documents)} windows of 512 tokens)")
        if args.llc_steps:
            llc_cost(run_dir, model, args.llc_steps)


def llc_cost(run_dir: Path, model, steps: int) -> None:
    """The LLC probe's default settings on one revision: its initial-loss pass (one pass of
    forward passes over its batches) and K SGLD steps of all its chains, timed; peak memory."""
    import resource

    import torch
    from omegaconf import OmegaConf

    from conf import CONF_DIR
    from observatory.probes.llc import batch_order, estimate, kept_blocks, sampled_model, settings, token_loss
    from observatory.sweep.runner import sampling_data

    default = settings(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "probes" / "llc" / "default.yaml")))
    blocks, mask = sampling_data(run_dir)
    keep = kept_blocks(len(blocks), default.max_blocks)  # as the estimate keeps them
    blocks, mask = blocks[keep], mask[keep]
    sampled = sampled_model(model)
    order = batch_order(len(blocks), default.batch_size, default.seed)
    started = time.perf_counter()
    with torch.no_grad():
        for rows in order:
            token_loss(sampled, blocks[rows])
    init_pass = time.perf_counter() - started
    started = time.perf_counter()
    estimate(sampled, blocks, mask, dataclasses.replace(default, burnin=0, draws=steps))
    per_step = (time.perf_counter() - started - init_pass) / steps
    planned = default.burnin + default.draws
    print(f"  llc ({default.chains} chains, batches of {default.batch_size} x {blocks.shape[1]} tokens, "
          f"{len(order)} batches a pass): initial-loss pass {init_pass:.0f} s, {per_step:.1f} s per SGLD step "
          f"(measured over {steps}); at the default {planned} steps about "
          f"{(init_pass + per_step * planned) / 60:.0f} min per revision (arithmetic); "
          f"peak resident {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB", flush=True)

if __name__ == "__main__":
    main()
