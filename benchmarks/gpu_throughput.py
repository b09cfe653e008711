"""The GPU path, one step at a time: training tokens/s and model FLOPs utilization (MFU) of
one size under fp32, bf16-mixed, + fused AdamW, + torch.compile, side by side in one run.

    python benchmarks/gpu_throughput.py [--size 98m] [--batch-size 512] [--steps 80] [--warmup 20]

MFU = tokens/s × FLOPs per token (train/model.py: palm_flops_per_token) / the GPU's bf16 peak
(train/module.py: PEAK_BF16_FLOPS). Also prints the `train/mfu` the module itself logged, and
checks that attention runs on the fused flash kernel under bf16.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import MetricRows, fit_tokens_per_s, train_config
from torch.nn.attention import SDPBackend, sdpa_kernel

from train.build import build
from train.data import build_corpus
from train.module import peak_flops

VARIANTS = [  # name, precision, fused AdamW, torch.compile
    ("fp32", "32-true", False, False),
    ("bf16-mixed", "bf16-mixed", False, False),
    ("+ fused AdamW", "bf16-mixed", True, False),
    ("+ torch.compile", "bf16-mixed", True, True),
]


def check_flash_attention(module, batch_size: int, seq_len: int) -> None:
    """Raises where the flash kernel cannot run this model's attention."""
    tokens = torch.randint(0, module.model.cfg.vocab_size, (batch_size, seq_len), device="cuda")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", torch.bfloat16), torch.no_grad():
        module.model.cuda()(tokens)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="98m")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures the GPU path")
    device = torch.device("cuda")
    peak = peak_flops(device)
    base = [f"model={args.size}", f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch_size}",
            "data.train_examples=50000", "trainer.log_every_n_steps=10", "trainer=gpu"]
    cfg = train_config(*base)
    corpus = build_corpus(cfg.data)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 peak "
          f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s; {args.size}, batch {args.batch_size} × "
          f"{cfg.data.seq_len} tokens, {args.steps} steps ({args.warmup} untimed)")
    check_flash_attention(build(cfg, corpus).module, args.batch_size, cfg.data.seq_len)
    print("attention under bf16: the fused flash kernel (forced with sdpa_kernel(FLASH_ATTENTION)) runs")
    print(f"{'variant':>16} {'tokens/s':>12} {'MFU':>7} {'logged train/mfu':>17} {'speed-up':>9}")
    first = None
    for name, precision, fused, compiled in VARIANTS:
        variant = train_config(*base, f"trainer.precision={precision}", f"optim.fused_on_gpu={fused}",
                               f"compile={compiled}")
        training, rows = build(variant, corpus), MetricRows()
        training.trainer.loggers = [rows]
        module = training.module
        tokens_per_s = fit_tokens_per_s(variant, training, args.warmup)
        assert bool(module.trainer.optimizers[0].defaults.get("fused")) == fused, "fused AdamW not as asked"
        mfu = tokens_per_s * module.model.palm_flops_per_token() / peak if peak else float("nan")
        logged_mfu = [row["train/mfu"] for step, row in rows.rows if step >= args.warmup and "train/mfu" in row]
        logged = statistics.median(logged_mfu) if logged_mfu else float("nan")
        first = first or tokens_per_s
        print(f"{name:>16} {tokens_per_s:>12,.0f} {mfu:>7.1%} {logged:>17.1%} {tokens_per_s / first:>8.2f}x", flush=True)
        del module, training
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
