"""Exact parameter counts of our decoder, and a concrete hardware-friendly shape for a target N.

The model counted is `llm.model.Transformer` (Llama-style, no biases anywhere):
  token embedding                    vocab_size · d_model
  per layer  attention RMSNorm       d_model
             wq                      d_model · n_heads·head_dim
             wk, wv                  d_model · n_kv_heads·head_dim  (each)
             wo                      n_heads·head_dim · d_model
             MLP RMSNorm             d_model
             SwiGLU w_gate, w_up     d_model · d_ff  (each)
             w_down                  d_ff · d_model
  final RMSNorm                      d_model
  lm_head                            vocab_size · d_model  (absent when tie_embeddings)
A mixture-of-experts block (model.moe, llm/moe.py; `ModelConfig.is_moe_layer`) swaps the SwiGLU for
             router                  d_model · E
             experts                 E · 3 · d_model · expert_d_ff
             shared (if any)         3 · d_model · shared_experts·expert_d_ff
of which a token uses the router, top_k experts and the shared SwiGLU: the *active* parameters.

Counting conventions: Chinchilla's N (used by llm.scaling.laws) is the *total*, embeddings included; Kaplan et al.
2020's N is the *non-embedding* count (everything but the token embedding and an untied lm_head).
No torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from llm.config import ModelConfig
from typed_yaml import ConfigError


def _round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple)) * multiple


def attention_matmul_params(cfg: ModelConfig) -> int:
    """wq, wk, wv, wo of one block. Attention projects d_model → n_heads·head_dim and back, so head_dim need not be
    d_model / n_heads."""
    d, q, kv = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    return d * q + 2 * d * kv + q * d


def layer_matmul_params(cfg: ModelConfig) -> int:
    """Weights of one *dense* transformer block that take part in a matrix multiply: wq, wk, wv, wo and the three
    SwiGLU matrices. The one count of a dense block's linears; params, matmul params and FLOPs all build on it (an
    MoE block's are `block_matmul_params`)."""
    return attention_matmul_params(cfg) + 3 * cfg.d_model * cfg.d_ff


def layer_params(cfg: ModelConfig) -> int:
    """Parameters of one dense transformer block: its matmul weights plus the two RMSNorm gains."""
    return 2 * cfg.d_model + layer_matmul_params(cfg)


def expert_params(cfg: ModelConfig) -> int:
    """One routed expert's SwiGLU (w_gate, w_up, w_down): 3 · d_model · expert_d_ff. 0 for a dense model."""
    return 3 * cfg.d_model * cfg.moe.expert_d_ff if cfg.moe is not None else 0


def shared_expert_params(cfg: ModelConfig) -> int:
    """The always-on shared SwiGLU of an MoE block, width shared_experts·expert_d_ff (0 without one)."""
    return cfg.moe.shared_experts * expert_params(cfg) if cfg.moe is not None else 0


def router_params(cfg: ModelConfig) -> int:
    """The router of one MoE block: d_model → E, no bias."""
    return cfg.d_model * cfg.moe.experts if cfg.moe is not None else 0


def block_matmul_params(cfg: ModelConfig, i: int, active: bool = False) -> int:
    """Matmul weights of block i: a dense block's `layer_matmul_params`, or attention + router + experts + shared
    for an MoE block, where active=True counts the top_k experts a token goes through instead of all E."""
    if not cfg.is_moe_layer(i):
        return layer_matmul_params(cfg)
    experts = cfg.moe.top_k if active else cfg.moe.experts
    return attention_matmul_params(cfg) + router_params(cfg) + experts * expert_params(cfg) \
        + shared_expert_params(cfg)


def _blocks(cfg: ModelConfig, active: bool) -> int:
    """Parameters of all blocks (norm gains included)."""
    if cfg.moe is None:  # the dense count as it always was, bit for bit
        return cfg.n_layers * layer_params(cfg)
    return sum(2 * cfg.d_model + block_matmul_params(cfg, i, active) for i in range(cfg.n_layers))


def embedding_params(cfg: ModelConfig) -> int:
    """Token embedding plus the lm_head when it is a separate matrix."""
    return cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)


def count_params(cfg: ModelConfig, include_embeddings: bool = True) -> int:
    """Exact parameter count of `llm.model.Transformer(cfg)` (for an MoE model all E experts of every MoE block).

    include_embeddings=True gives the total (Chinchilla's convention, equal to sum(p.numel())); False gives
    the non-embedding count (Kaplan's convention): layers and the final norm only.
    """
    non_embedding = _blocks(cfg, active=False) + cfg.d_model
    return non_embedding + (embedding_params(cfg) if include_embeddings else 0)


def count_params_non_embedding(cfg: ModelConfig) -> int:
    return count_params(cfg, include_embeddings=False)


def count_active_params(cfg: ModelConfig, include_embeddings: bool = True) -> int:
    """Parameters one token uses: `count_params` with each MoE block's E routed experts replaced by its top_k (the
    router and shared experts included). Equal to count_params for a dense model."""
    non_embedding = _blocks(cfg, active=True) + cfg.d_model
    return non_embedding + (embedding_params(cfg) if include_embeddings else 0)


def count_matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matrix multiply per token: every linear a token goes through in the blocks (for an
    MoE block the router, its top_k experts and the shared experts: the active ones) plus the output projection
    (tied or not). The input embedding is a lookup and the norms are elementwise, so neither costs matmul FLOPs;
    this is the N of PaLM App. B's 6N (see llm.cost.flops)."""
    if cfg.moe is None:
        return cfg.n_layers * layer_matmul_params(cfg) + cfg.vocab_size * cfg.d_model
    return sum(block_matmul_params(cfg, i, active=True) for i in range(cfg.n_layers)) + cfg.vocab_size * cfg.d_model


# ---------------------------------------------------------------------------------------------------------
# Shape design.
#
# Rules (each a convention of published model families, not an optimum we measured):
#   * aspect ratio d_model / n_layers in [64, 128]. Kaplan et al. 2020 (arXiv:2001.08361, §3.1, Fig. 5) find
#     loss within a few percent over aspect ratios 20-200 at fixed N; Chinchilla's Table A9 and Llama 1-3 sit
#     at 64-128 (Chinchilla 70B: 8192/80; Llama 2 7B: 4096/32). Widened to [32, 256] only if no shape in the
#     band lands within 10% of the target.
#   * head_dim 64 below d_model 2048 (GPT-3, Chinchilla's small models), 128 from 2048 up (Llama).
#   * n_heads divisible by every tensor-parallel degree we may use, so d_model is a multiple of
#     head_dim · lcm(tp_degrees); all sizes are then multiples of 64. With tp_degrees=(1, 2, 4, 8) widths step
#     by 512 below 2048, so a small target can land ~12% from the nearest shape; pass tp_degrees=(1, 2, 4)
#     for finer widths. Callers get the exact N of the shape chosen and should recompute D = C / 6N.
#   * grouped-query attention with 8 key/value heads (or the largest divisor of n_heads below that which
#     every TP degree divides) from 3B parameters up (Llama 2 70B, Llama 3), full
#     multi-head attention below, where the KV cache is small anyway.
#   * d_ff = 8/3 · d_model rounded up to a multiple of 256 (Shazeer 2020 / Llama: a SwiGLU MLP with the
#     parameters of a 4·d_model GELU MLP; 256 keeps each TP shard a multiple of 32), or of lcm(256, tp_degrees)
#     when a degree such as 3 does not divide 256, so that every TP degree splits the MLP.
#   * vocab_size padded up to a multiple of 64 · lcm(tp_degrees) (Megatron's make-vocab-size-divisible-by:
#     each TP shard of the embedding and lm_head is a multiple of 64 rows). Padding rows are never predicted.

ASPECT_RATIO_BAND = (64, 128)
ASPECT_RATIO_FALLBACK_BAND = (32, 256)


@dataclass(frozen=True)
class ShapeRules:
    """The conventions design_shape follows: STANDARD (the rules above) for real models, SMALL for sweeps of
    models small enough to train on a CPU."""

    name: str
    head_dim: int | None
    """None: 64 below d_model 2048, 128 from it (the rule above)."""
    width_step: int
    """d_model is a multiple of this (and of head_dim times the TP degrees' lcm)."""
    aspect_band: tuple[int, int]
    fallback_band: tuple[int, int]
    d_ff_multiple: int
    size_tolerance: float | None = None
    """None: the shape closest to the target N wins. A factor such as 1.15: among the shapes within it of the
    target, the one whose aspect ratio is nearest the band's middle wins (a smoother family in depth and width
    where the width steps are coarse relative to N; the caller recomputes D from the exact N anyway)."""


STANDARD = ShapeRules("standard", None, 128, ASPECT_RATIO_BAND, ASPECT_RATIO_FALLBACK_BAND, 256)
SMALL = ShapeRules("small", 32, 32, (16, 64), (8, 128), 32, size_tolerance=1.15)
"""For 30k-1M parameter models (CPU-scale isoFLOP sweeps). Under STANDARD the smallest model of a 4k vocabulary
is 1.3M parameters, 80% of them embeddings, and every shape under ~4M has one to four layers. SMALL takes 32-wide
heads (half GPT-3's 64) in 32-wide steps, aspect ratios d_model / n_layers of 16-64 (Kaplan et al. 2020, Fig. 5:
loss within a few percent across a wide band of aspect ratios at fixed N) and d_ff a multiple of 32: with a
512-piece vocabulary, models from ~40k parameters up with one to eight layers. A convention for the sweep, not a
measured optimum, and not for large models: narrow heads and steps leave matmuls too small for an accelerator."""
SHAPE_RULES = {r.name: r for r in (STANDARD, SMALL)}
GQA_FROM_N_PARAMS = 3e9
GQA_KV_HEADS = 8
MAX_D_MODEL = 32768
MAX_TARGET_OVERSHOOT = 1.10
"""A target up to 10% above the largest shape gets that shape (the band rule's own tolerance); past it, an error."""
PP_SPLIT_TOLERANCE = 1.04
"""A shape within 4% of the target N is preferred to a closer one when a larger pipeline degree divides its layer
count (a 31-layer model can be pipelined only by 31; one layer of a 3B model is 3% of N). The loss is flat
near the compute-optimal N: under Besiroglu et al. 2024's fit, 4% off N at fixed C = 1e22 costs 0.002% of the loss."""


def _lcm(values) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def _head_dim_for(d_model: int) -> int:
    return 64 if d_model < 2048 else 128


class TargetTooLarge(ConfigError):
    """The target N is past the largest shape the rules build; `largest` is that shape's exact count."""

    def __init__(self, message: str, largest: int):
        super().__init__(message)
        self.largest = largest


@dataclass(frozen=True)
class _Candidate:
    err: float
    ratio_err: float
    cfg: ModelConfig


def design_shape(n_params_target: float, vocab_size: int = 32000, seq_len: int = 2048,
                 tp_degrees: tuple[int, ...] = (1, 2, 4, 8), tie_embeddings: bool = False,
                 pp_degrees: tuple[int, ...] = (1, 2, 4, 8), rules: ShapeRules = STANDARD) -> ModelConfig:
    """A decoder shape whose exact total parameter count is as close as the rules above allow to the target.

    n_params_target counts all parameters (embeddings included, Chinchilla's convention). Raises ValueError
    when the target is below the smallest shape the rules allow (the embedding alone can exceed a tiny
    target: lower vocab_size) or an argument is not positive, and TargetTooLarge (a ValueError) when it is
    more than MAX_TARGET_OVERSHOOT above the largest (the widest d_model at the deepest ratio allowed).
    pp_degrees: pipeline degrees the layer count should split into (see PP_SPLIT_TOLERANCE); (1,) for none.
    rules: STANDARD, or SMALL for CPU-scale models (see ShapeRules).
    """
    if not n_params_target > 0:
        raise ConfigError(f"n_params_target={n_params_target} must be positive")
    if vocab_size <= 0 or seq_len <= 0:
        raise ConfigError(f"vocab_size={vocab_size} and seq_len={seq_len} must be positive")
    if not tp_degrees or any(int(t) != t or t < 1 for t in tp_degrees):
        raise ConfigError(f"tp_degrees={tp_degrees} must be positive integers")
    if not pp_degrees or any(int(p) != p or p < 1 for p in pp_degrees):
        raise ConfigError(f"pp_degrees={pp_degrees} must be positive integers")
    pp_degrees = tuple(pp_degrees) + (1,)
    m = _lcm(int(t) for t in tp_degrees)
    vocab = _round_up(vocab_size, 64 * m)
    n_kv_fixed = max(GQA_KV_HEADS, m) if n_params_target >= GQA_FROM_N_PARAMS else None
    d_ff_multiple = _lcm((rules.d_ff_multiple, m))  # the rules' multiple unless a TP degree does not divide it

    def head_dim_for(d_model: int) -> int:
        return rules.head_dim or _head_dim_for(d_model)

    def build(d_model: int, n_layers: int) -> ModelConfig:
        head_dim = head_dim_for(d_model)
        n_heads = d_model // head_dim
        n_kv = n_heads
        if n_kv_fixed is not None:  # the largest divisor of n_heads up to n_kv_fixed that TP can still split
            n_kv = max(k for k in range(m, n_heads + 1, m) if n_heads % k == 0 and k <= n_kv_fixed)
        return ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv,
                           head_dim=head_dim, d_ff=_round_up(8 * d_model / 3, d_ff_multiple), vocab_size=vocab,
                           seq_len=seq_len, tie_embeddings=tie_embeddings)

    widths = [d for d in range(rules.width_step, MAX_D_MODEL + 1, rules.width_step) if d % (head_dim_for(d) * m) == 0]
    if not widths:
        raise ConfigError(f"tp_degrees={tp_degrees}: no d_model up to {MAX_D_MODEL} splits into heads that "
                         f"every degree divides (lcm {m}); use fewer or smaller degrees")
    smallest = count_params(build(widths[0], 1))
    if n_params_target < smallest:
        # Name every constraint that set the floor, so the user sees which one to relax.
        ways = (["fewer TP degrees"] if m > 1 else []) + (["the small shape rules"] if rules is STANDARD else [])
        raise ConfigError(f"target N={n_params_target:.3g} is below the smallest shape these rules allow "
                         f"({smallest:,} parameters: {rules.name} rules, tp_degrees={tuple(tp_degrees)} need "
                         f"d_model >= {widths[0]}, vocab_size={vocab}); "
                         + ", ".join(ways) + (" or " if ways else "") + "a smaller vocabulary would lower that floor, "
                         "a larger budget would raise the target")
    largest = count_params(build(widths[-1], widths[-1] // rules.fallback_band[0]))
    if n_params_target > largest * MAX_TARGET_OVERSHOOT:
        raise TargetTooLarge(f"target N={n_params_target:.3g} is above the largest shape these rules allow "
                             f"({largest:,} parameters: d_model={widths[-1]}, "
                             f"{widths[-1] // rules.fallback_band[0]} layers)", largest)

    def search(lo: int, hi: int) -> _Candidate | None:
        found = []
        for d in widths:
            probe = build(d, 1)
            per_layer, fixed = layer_params(probe), count_params(probe) - layer_params(probe)
            l_min, l_max = max(1, math.ceil(d / hi)), d // lo
            if l_min > l_max or fixed + l_max * per_layer < n_params_target / 2 \
                    or fixed + l_min * per_layer > n_params_target * 2:
                continue
            for n_layers in range(l_min, l_max + 1):
                err = abs(math.log((fixed + n_layers * per_layer) / n_params_target))
                ratio_err = abs(math.log(d / n_layers / math.sqrt(lo * hi)))
                found.append((err, ratio_err, d, n_layers))
        if not found:
            return None
        # Among the shapes within PP_SPLIT_TOLERANCE of the target (or the closest, when none is), prefer the
        # layer count the largest pipeline degree divides, then the closest N, then the aspect ratio nearest the
        # middle of the band (with rules.size_tolerance: within that factor, the aspect ratio before N).
        slack = max(min(c[0] for c in found), math.log(rules.size_tolerance or PP_SPLIT_TOLERANCE))
        closeness = (lambda c: (c[1], c[0])) if rules.size_tolerance else (lambda c: (c[0], c[1]))
        err, ratio_err, d, n_layers = min((c for c in found if c[0] <= slack),
                                          key=lambda c: (-max(p for p in pp_degrees if c[3] % p == 0), *closeness(c)))
        return _Candidate(err, ratio_err, build(d, n_layers))

    best = search(*rules.aspect_band)
    if best is None or best.err > math.log(1.10):
        wide = search(*rules.fallback_band)
        if wide is not None and (best is None or wide.err < best.err):
            best = wide
    if best is None:  # a target near the smallest shape when even one layer of the narrowest width is out of band
        best = _Candidate(0.0, 0.0, build(widths[0], 1))
    best.cfg.validate()
    return best.cfg
