"""A hub checkpoint with the hook names our probes read: TransformerLens 4's TransformerBridge
over the Hugging Face model, on the model's own weights and numerics (no LayerNorm folding).
The bridge is TransformerLens's own module, so `blocks.{l}.attn.hook_pattern`, `hook_resid_pre`
and `hook_resid_post` mean what they mean on our GPT and in TransformerLens; why not nnsight:
docs/suites.md."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch

BLOCK = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.(.*)")  # GPT-NeoX, Llama: layers.N; GPT-2: h.N
PREFIXES = ("gpt_neox.", "model.", "transformer.")  # the architectures' outer module


@dataclass(frozen=True)
class HubModelConfig:
    """What the probes read of a model's shape (our GPT's config fields, by the same names)."""

    n_layer: int
    n_head: int
    n_ctx: int  # the probes' context: min(hub.n_ctx, the model's trained context)
    d_model: int
    vocab_size: int
    architecture: str


class HookedHubModel(torch.nn.Module):
    """Our GPT's probe interface (cfg, forward -> logits, run_with_cache, named_parameters with
    blocks.{l} names) over a TransformerBridge."""

    def __init__(self, bridge, cfg: HubModelConfig, weights: dict[str, torch.Tensor], hf_config):
        super().__init__()
        self.bridge, self.cfg, self.hf_config = bridge, cfg, hf_config
        self.weights = weights  # the checkpoint's own parameters by their Hugging Face names

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.bridge(tokens, return_type="logits")

    def run_with_cache(self, tokens: torch.Tensor, names_filter: list[str]):
        names = list(names_filter)
        missing = [n for n in names if n not in self.bridge.hook_dict]
        if missing:
            raise MissingHook(f"{self.cfg.architecture} has no hook point {', '.join(missing)}"
                              + (" (its parallel residual: attention and MLP both read hook_resid_pre, so there is "
                                 "no resid_mid)" if any("resid_mid" in n for n in missing) else "")
                              + "; leave out the probe that asks for it")
        logits, cache = self.bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
        return logits, {name: cache[name] for name in names}

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """The checkpoint's parameters (not the bridge's working copies: it splits GPT-NeoX's
        fused qkv into q, k, v beside it), a block's as blocks.{l}.<its own name> (the weights
        probe groups by block)."""
        for name, param in self.weights.items():
            match = BLOCK.search(name)
            if match:
                yield f"blocks.{match.group(1)}.{match.group(2)}", param
            else:
                yield next((name[len(p):] for p in PREFIXES if name.startswith(p)), name), param


    def sampling_model(self) -> torch.nn.Module:
        """The checkpoint as transformers builds it, its forward returning logits: the module
        whose weights the LLC's sampler moves. Not the bridge: it computes GPT-NeoX's attention
        from q, k, v copies of the fused weights, so moving the checkpoint's own weights inside
        it would change nothing; a copy, so the bridge's weights stay the checkpoint's."""
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_config(self.hf_config, attn_implementation="eager", dtype=torch.float32)
        hf_model.load_state_dict(self.weights, strict=False)  # a tied unembedding is not among the weights
        names = {name for name, _ in hf_model.named_parameters()}  # tied weights once
        if names != set(self.weights):
            raise ValueError(f"{self.cfg.architecture}: transformers builds other parameters than the checkpoint has "
                             f"({sorted(names ^ set(self.weights))[:4]}...)")
        return Logits(hf_model.to(next(iter(self.weights.values())).device).eval())


class Logits(torch.nn.Module):
    """A Hugging Face causal LM as our GPT's forward: tokens (B, T) -> logits (B, T, V)."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf_model(input_ids=tokens, use_cache=False).logits


class MissingHook(ValueError):
    """A probe asked for a hook point the architecture does not have."""


def model_config(hf_config, n_ctx: int) -> HubModelConfig:
    trained = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    return HubModelConfig(n_layer=hf_config.num_hidden_layers, n_head=hf_config.num_attention_heads,
                          n_ctx=min(n_ctx, trained) if trained else n_ctx, d_model=hf_config.hidden_size,
                          vocab_size=hf_config.vocab_size, architecture=hf_config.architectures[0]
                          if getattr(hf_config, "architectures", None) else type(hf_config).__name__)


def load_hooked(snapshot: Path, tokenizer_dir: Path, n_ctx: int, device: str = "cpu") -> HookedHubModel:
    """One revision's folder (config.json and weights) as a hooked model in eval mode."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per revision says nothing the sweep's own progress does not
    hf_model = AutoModelForCausalLM.from_pretrained(snapshot, attn_implementation="eager", dtype=torch.float32)
    weights = dict(hf_model.named_parameters())  # before the bridge wraps the modules (tied weights once)
    hf_config = copy.deepcopy(hf_model.config)
    bridge = TransformerBridge.boot_transformers(str(snapshot), hf_model=hf_model.eval(), device=device,
                                                 tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir))
    bridge.eval()
    return HookedHubModel(bridge, model_config(hf_model.config, n_ctx), weights, hf_config).eval()
