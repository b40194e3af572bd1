"""The model's shape and numerics (llm/model.py builds exactly this)."""
from __future__ import annotations

from dataclasses import dataclass

from typed_yaml import ConfigError


def _round_up(x: int, multiple: int) -> int:
    return ((x + multiple - 1) // multiple) * multiple


@dataclass
class MoEConfig:
    """A mixture-of-experts feed-forward (llm/moe.py): token-choice top-k routing over fine-grained routed experts,
    plus optional always-on shared experts. Dropless: every token reaches all of its top_k experts (no capacity, so
    no token is ever dropped and the result does not depend on how tokens are spread over ranks)."""

    experts: int = 8
    """Routed experts per MoE layer (E); divisible by parallel.expert, which splits them over ranks."""
    top_k: int = 2
    """Routed experts each token uses (Mixtral's 2 of 8); their softmax weights are renormalised to sum to 1."""
    expert_d_ff: int | None = None
    """Hidden width of one expert's SwiGLU. Defaults to model.d_ff (granularity 1). Fine-grained experts (Krajewski et
    al. 2024, arXiv:2402.07871) divide it by the granularity G and multiply experts and top_k by G, keeping the
    active parameters per token."""
    shared_experts: int = 0
    """Experts every token always passes through (DeepSeek-MoE, arXiv:2401.06066), as one SwiGLU of width
    shared_experts·expert_d_ff added to the routed output. 0: none (Mixtral)."""
    every_k_layers: int = 1
    """Which blocks get the MoE feed-forward: block i does when (i + 1) is a multiple of this (1: every block, as
    Mixtral; 2: every other block, as GShard and Switch); the others keep the dense SwiGLU of width model.d_ff."""
    aux_loss_coef: float = 0.01
    """Weight of the load-balancing loss E·Σᵢ fᵢ·Pᵢ (Switch Transformer, Fedus et al. 2022, eq. 4: fᵢ the share of
    routed slots that went to expert i, Pᵢ its mean router probability; 1 when balanced). 0.01 is Switch's α."""
    z_loss_coef: float = 0.0
    """Weight of the router z-loss mean(logsumexp(logits)²) (ST-MoE, Zoph et al. 2022, eq. 5; they use 1e-3), which
    keeps router logits small; 0 turns it off."""

    def validate(self, where: str, d_ff: int, n_layers: int) -> None:
        if self.experts < 1:
            raise ConfigError(f"{where}.experts={self.experts} must be >= 1")
        if not 1 <= self.top_k <= self.experts:
            raise ConfigError(f"{where}.top_k={self.top_k} must be between 1 and {where}.experts={self.experts} "
                              "(a token cannot use more experts than exist)")
        width = self.expert_d_ff if self.expert_d_ff is not None else d_ff
        if width < 1:
            raise ConfigError(f"{where}.expert_d_ff={width} must be positive")
        if self.shared_experts < 0:
            raise ConfigError(f"{where}.shared_experts={self.shared_experts} must be >= 0")
        if not 1 <= self.every_k_layers <= n_layers:
            raise ConfigError(f"{where}.every_k_layers={self.every_k_layers} must be between 1 and model.n_layers="
                              f"{n_layers} (otherwise no block would get experts)")
        for name in ("aux_loss_coef", "z_loss_coef"):
            if not getattr(self, name) >= 0:  # `not >=` also refuses nan
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 0")

ROPE_SCALING_TYPES = ("linear", "llama3", "yarn")
"""The RoPE scalings llm/rope.py implements, by transformers' `rope_type` names (llm/hf/convert.py maps them)."""


@dataclass
class RopeScalingConfig:
    """Rescaled rotary frequencies for a context longer than the one the model was trained at (llm/rope.py), e.g.
    `rope_scaling: {type: yarn, original_seq_len: 256}` with `seq_len: 1024`. The tables equal transformers' for the
    same `rope_type` (tests/llm/test_rope.py), so an exported model computes the same function."""

    type: str = "yarn"
    """The scheme: `linear` (position interpolation, Chen et al. 2023, arXiv:2306.15595: every frequency / factor),
    `llama3` (Llama 3.1's: low frequencies / factor, high ones kept, a smooth ramp between; Dubey et al. 2024,
    arXiv:2407.21783) or `yarn` (NTK-by-parts interpolation plus an attention temperature; Peng et al. 2023,
    arXiv:2309.00071)."""
    factor: float | None = None
    """How much longer the context gets (s in the papers), >= 1. Defaults to model.seq_len / original_seq_len (Llama
    3.1 sets 8 for 8k → 128k, a 16× longer seq_len: the two may differ)."""
    original_seq_len: int | None = None
    """The seq_len the model was trained at before extension (transformers' original_max_position_embeddings);
    required by llama3 and yarn, whose frequency bands are defined by it, optional for linear."""
    low_freq_factor: float = 1.0
    """llama3: wavelengths longer than original_seq_len / low_freq_factor are fully interpolated (Llama 3.1's 1)."""
    high_freq_factor: float = 4.0
    """llama3: wavelengths shorter than original_seq_len / high_freq_factor are kept (Llama 3.1's 4); >
    low_freq_factor."""
    beta_fast: float = 32.0
    """yarn: dimensions that turn more than beta_fast times over original_seq_len are extrapolated (kept); 32 is the
    paper's β for Llama (Peng et al. 2023, arXiv:2309.00071, "NTK-by-parts" interpolation, α=1 β=32)."""
    beta_slow: float = 1.0
    """yarn: dimensions that turn fewer than beta_slow times are fully interpolated (the paper's α=1); < beta_fast."""
    attention_factor: float | None = None
    """yarn: the factor on cos/sin, so on q and on k, squared on their dot product (the paper's √(1/t)); defaults to
    the paper's recommended √(1/t) = 0.1·ln(factor) + 1 (Peng et al. 2023, arXiv:2309.00071). Must be positive."""
    truncate: bool = True
    """yarn: round the ramp's ends to whole dimensions (floor/ceil), as the paper's code and transformers do."""

    def resolved_factor(self, seq_len: int) -> float:
        """`factor`, or seq_len / original_seq_len when it is unset."""
        if self.factor is not None:
            return self.factor
        return seq_len / self.original_seq_len if self.original_seq_len else 1.0

    def validate(self, where: str, seq_len: int) -> None:
        if self.type not in ROPE_SCALING_TYPES:
            raise ConfigError(f"{where}.type={self.type!r} is not supported (only {', '.join(ROPE_SCALING_TYPES)})")
        if self.original_seq_len is None and self.type != "linear":
            raise ConfigError(f"{where}.original_seq_len is not set: {self.type} needs the seq_len the model was "
                              f"trained at before extension (e.g. {where}.original_seq_len={seq_len // 4})")
        if self.original_seq_len is not None and self.original_seq_len <= 0:
            raise ConfigError(f"{where}.original_seq_len={self.original_seq_len} must be positive")
        if self.factor is None and self.original_seq_len is None:
            raise ConfigError(f"{where}.factor is not set (nor original_seq_len, from which it would follow)")
        factor = self.resolved_factor(seq_len)
        if not factor >= 1:  # `not >=` also refuses nan
            raise ConfigError(f"{where}.factor={factor:g} must be >= 1 (model.seq_len / original_seq_len when unset): "
                              "rope scaling lengthens the context")
        if self.type == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ConfigError(f"{where}: need 0 < low_freq_factor < high_freq_factor, got {self.low_freq_factor} "
                              f"and {self.high_freq_factor}")
        if self.type == "yarn" and not 0 < self.beta_slow < self.beta_fast:
            raise ConfigError(f"{where}: need 0 < beta_slow < beta_fast, got {self.beta_slow} and {self.beta_fast}")
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ConfigError(f"{where}.attention_factor={self.attention_factor} must be positive")


@dataclass
class ModelConfig:
    """Shape of a Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention)."""

    n_layers: int = 4
    """Transformer blocks. The defaults (4 blocks of width 256: 3.2M parameters besides the embeddings) are a debug
    model that trains in minutes on a CPU, not a recommendation; launch/plan.py sizes a real one."""
    d_model: int = 256
    """Width of the residual stream (the embedding size)."""
    n_heads: int = 4
    """Query heads per attention layer; a multiple of n_kv_heads, and divisible by parallel.tensor."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; defaults to n_heads (plain multi-head attention)."""
    head_dim: int | None = None
    """Width of one attention head. Defaults to d_model / n_heads when n_heads divides d_model; set it to
    decouple the two (q/k/v project d_model → n_heads·head_dim and o projects back, as in Llama)."""
    d_ff: int | None = None
    """SwiGLU hidden size; defaults to 8/3·d_model rounded up to a multiple of 64 (Llama's rule keeps
    the SwiGLU MLP at the parameter count of a 4·d_model GELU MLP)."""
    vocab_size: int = 4096
    """Rows of the embedding and of the LM head: at least the tokenizer's vocabulary (data.tokenizer), and
    divisible by parallel.tensor. The default is the size data_pipeline trains its tokenizer to."""
    seq_len: int = 256
    """Tokens per training sample (the context length); the rotary tables are built for this length. After a context
    extension it is the extended length (and rope_scaling.original_seq_len the length trained at first)."""
    tie_embeddings: bool = False
    """Share one matrix between the input embedding and the LM head (GPT-2); off as in Llama 2/3, whose 7B+
    models untie them. Saves vocab_size·d_model parameters."""
    rope_theta: float = 10000.0
    """Base of the rotary position frequencies (RoFormer's 10,000, as in Llama 2; Llama 3 uses 500,000 for
    long contexts)."""
    rope_scaling: RopeScalingConfig | None = None
    """Rescaled rotary frequencies for a context extended past the trained one (RopeScalingConfig: linear, llama3,
    yarn); absent: plain RoPE."""
    norm_eps: float = 1e-5
    """Added to the mean square inside every RMSNorm, keeping the division finite (Llama's 1e-5)."""
    init_std: float = 0.02
    """Std of the normal init; output projections are further scaled by 1/sqrt(2·n_layers) (GPT-2)."""
    dropout: float = 0.0
    """Dropout probability on the attention weights and on each block's two residual branches, in [0, 1). 0 as in
    Llama and most single-epoch pretraining, which sees too little repeated data to overfit."""
    moe: MoEConfig | None = None
    """Mixture-of-experts feed-forward (e.g. `moe: {experts: 8, top_k: 2}`); absent: a dense model."""

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        # Left None when n_heads does not divide d_model: validate() then asks for an explicit head_dim
        # rather than silently training heads of width d_model // n_heads.
        if self.head_dim is None and self.n_heads > 0 and self.d_model % self.n_heads == 0:
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = _round_up(int(8 * self.d_model / 3), 64)
        if self.moe is not None and self.moe.expert_d_ff is None:
            self.moe.expert_d_ff = self.d_ff

    def is_moe_layer(self, i: int) -> bool:
        """Whether block i has the MoE feed-forward (MoEConfig.every_k_layers)."""
        return self.moe is not None and (i + 1) % self.moe.every_k_layers == 0

    @property
    def moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.n_layers))

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
        if self.moe is not None:
            self.moe.validate(f"{where}.moe", self.d_ff, self.n_layers)
        if self.rope_scaling is not None:
            self.rope_scaling.validate(f"{where}.rope_scaling", self.seq_len)
