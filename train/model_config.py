"""The GPT family's shape: one config dataclass and the rule that names a size by its depth.

Free of torch, so that a config can be checked (train/config.py) before torch is imported.
The size family follows one shape rule: d_model = ASPECT_RATIO * n_layer and a fixed head
size, so a size is named by n_layer alone (conf/model/*.yaml).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ASPECT_RATIO = 32  # d_model / n_layer
HEAD_SIZE = 32  # d_model / n_head
POSITIONS = {
    "residual": "learned positions added to the token embeddings once (GPT-2)",
    "qk": "learned positions added to every layer's query and key input, before its LayerNorm; values and "
          "the residual stream never carry them (Shortformer's position-infused attention)",
}


@dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int
    n_ctx: int = 64
    d_model: int | None = None  # default: ASPECT_RATIO * n_layer
    n_head: int | None = None  # default: d_model // HEAD_SIZE
    d_mlp: int | None = None  # default: 4 * d_model
    attn_only: bool = False
    tied_embeddings: bool = False
    layer_norm: bool = True  # False: no LayerNorm anywhere (Nanda et al.'s grokking model)
    init_std: float = 0.02  # std of every weight matrix at init (GPT-2); Nanda et al.: 1/sqrt(d_model)
    positions: str = "residual"  # "residual" (GPT-2) or "qk": only queries and keys see them (see POSITIONS)
    name: str = ""

    def __post_init__(self):
        if self.d_model is None:
            self.d_model = ASPECT_RATIO * self.n_layer
        if self.n_head is None:
            self.n_head = max(1, self.d_model // HEAD_SIZE)
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        if self.init_std <= 0:
            raise ValueError(f"init_std={self.init_std} must be positive")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions={self.positions!r} is not one of {', '.join(map(repr, POSITIONS))}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)
