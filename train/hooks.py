"""Hook points and their TransformerLens names.

Every intermediate activation of the GPT passes through an identity `HookPoint`, named by its
path in the model as in TransformerLens (`blocks.0.attn.hook_pattern`, `hook_embed`, ...).
`act_name` spells those names the way `transformer_lens.utils.get_act_name` does, so probe code
can say act_name("pattern", layer) instead of formatting the path itself.
"""

from __future__ import annotations

import torch
import torch.nn as nn

BLOCK = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")  # blocks.L.hook_X
ATTN = ("q", "k", "v", "z", "attn_scores", "pattern")  # blocks.L.attn.hook_X
MLP = ("pre", "post")  # blocks.L.mlp.hook_X
TOP = {"embed": "hook_embed", "pos_embed": "hook_pos_embed", "normalized": "ln_final.hook_normalized"}  # no layer


class HookPoint(nn.Module):
    """Identity module that forward hooks attach to; `name` is its path in the model."""

    def __init__(self):
        super().__init__()
        self.name = ""

    @property
    def active(self) -> bool:
        return bool(self._forward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def act_name(name: str, layer: int | None = None) -> str:
    """The hook point of activation `name` (in block `layer`): act_name("pattern", 1) ->
    "blocks.1.attn.hook_pattern", act_name("embed") -> "hook_embed". A full hook name passes
    through unchanged. Raises ValueError for a name no model of the family has (so a typo, or
    a layer given where there is none, is not a silently empty cache)."""
    if layer is None:
        if name in TOP:
            return TOP[name]
        if "." in name or name.startswith("hook_"):
            return name  # already a full name
        raise ValueError(f"{name!r} needs a layer, or is not an activation; without a layer: {', '.join(TOP)}")
    if name in BLOCK:
        return f"blocks.{layer}.hook_{name}"
    if name in ATTN:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in MLP:
        return f"blocks.{layer}.mlp.hook_{name}"
    raise ValueError(f"no activation {name!r} in a block; one of {', '.join(BLOCK + ATTN + MLP)}")


def hook_layer(name: str) -> int | None:
    """The block a hook name belongs to ("blocks.3.attn.hook_q" -> 3), None outside the blocks."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" else None
