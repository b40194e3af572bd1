"""The model's shape and numerics (llm/model.py builds exactly this)."""
from __future__ import annotations

from dataclasses import dataclass

from typed_yaml import ConfigError


def _round_up(x: int, multiple: int) -> int:
    return ((x + multiple - 1) // multiple) * multiple


@dataclass
class ModelConfig:
    """Shape of a Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention)."""

    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; defaults to n_heads (plain multi-head attention)."""
    head_dim: int | None = None
    """Width of one attention head. Defaults to d_model / n_heads when n_heads divides d_model; set it to
    decouple the two (q/k/v project d_model → n_heads·head_dim and o projects back, as in Llama)."""
    d_ff: int | None = None
    """SwiGLU hidden size; defaults to 8/3·d_model rounded up to a multiple of 64 (Llama's rule keeps
    the SwiGLU MLP at the parameter count of a 4·d_model GELU MLP)."""
    vocab_size: int = 4096
    seq_len: int = 256
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    """Std of the normal init; output projections are further scaled by 1/sqrt(2·n_layers) (GPT-2)."""
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        # Left None when n_heads does not divide d_model: validate() then asks for an explicit head_dim
        # rather than silently training heads of width d_model // n_heads.
        if self.head_dim is None and self.n_heads > 0 and self.d_model % self.n_heads == 0:
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = _round_up(int(8 * self.d_model / 3), 64)

    def validate(self, where: str = "model") -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be positive")
        if self.head_dim is None:
            raise ConfigError(
                f"{where}.n_heads={self.n_heads} does not divide {where}.d_model={self.d_model}: set "
                f"{where}.head_dim (e.g. {where}.head_dim={_round_up(-(-self.d_model // self.n_heads), 2)}; "
                f"attention projects d_model to n_heads·head_dim and back) or pick n_heads dividing d_model")
        for name in ("n_kv_heads", "head_dim", "d_ff", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be positive")
        for name in ("rope_theta", "norm_eps", "init_std"):
            if not getattr(self, name) > 0:  # `not >` also refuses nan
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be positive")
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(f"{where}.n_kv_heads={self.n_kv_heads} must divide {where}.n_heads={self.n_heads} "
                              "(each key/value head serves a whole group of query heads)")
        if self.head_dim % 2 != 0:
            raise ConfigError(f"{where}.head_dim={self.head_dim} must be even for rotary embeddings")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout={self.dropout} must be in [0, 1)")
