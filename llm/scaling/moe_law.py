"""The fine-grained mixture-of-experts scaling law of Krajewski et al. 2024 and its compute-optimal (N, D, G).

Krajewski, Ludziejewski et al. 2024, "Scaling Laws for Fine-Grained Mixture of Experts" (arXiv:2402.07871; ICML 2024),
eq. for the joint law and Table 2 for its fit, on C4 with the GPT-2 tokenizer:

    L(N, D, G) = c + (g / G^γ + a) / N^α + b / D^β

  * G, the granularity: each expert is d_ff / G wide and a token goes to G of them (top_k = G), so the active
    parameters do not change with G (`MoEConfig.expert_d_ff` is d_ff / G);
  * E, the expansion rate: the MoE layer holds E times a dense feed-forward's parameters, so there are E·G experts.
    The fit holds E = 64 (their main sweep; EXPANSION_RATE), and so does the plan;
  * N: the model's *total* non-embedding parameters (attention plus all experts), D tokens;
  * compute (their §6): F = (12·d²·c_f + d·E·G·c_r) · D · n_blocks, c_f = 6 FLOPs per active weight and c_r = 14 per
    router weight (the router matmul plus the routing work they attribute to it), with d_model = 64 · n_blocks.

The coefficients are those quoted from Table 2 by a summary of the paper (we could not retrieve the paper's own text
here); they are checked in tests/llm/scaling/test_moe_law.py by recomputing the paper's compute-optimal table (its
§6 table: 64x100M at G = 8 for 2.95e18 FLOPs, ..., 64x1T at G = 64 for 4.97e25): the FLOPs of each row within 0.3%,
and this module's optimum lands on the same G with N and D within a few percent. That check is also what fixes N as
the total (not the active) count: with N active the optimum moves far from their table.
No torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from typed_yaml import ConfigError


@dataclass(frozen=True)
class GranularLaw:
    """L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta; with g = 0 a dense law L(N, D)."""

    name: str
    a: float
    alpha: float
    b: float
    beta: float
    g: float
    gamma: float
    c: float

    def loss(self, n_params: float, n_tokens: float, granularity: float = 1.0) -> float:
        """Nats/token on the fit's data (C4, GPT-2 tokenizer). n_params: total non-embedding parameters."""
        return self.c + (self.g / granularity ** self.gamma + self.a) / n_params ** self.alpha \
            + self.b / n_tokens ** self.beta


KRAJEWSKI_2024_MOE = GranularLaw("Krajewski et al. 2024 MoE (arXiv:2402.07871, Table 2)",
                                 a=18.1, alpha=0.115, b=30.8, beta=0.147, g=2.1, gamma=0.58, c=0.47)
KRAJEWSKI_2024_DENSE = GranularLaw("Krajewski et al. 2024 dense (arXiv:2402.07871, Table 2)",
                                   a=16.3, alpha=0.126, b=26.7, beta=0.127, g=0.0, gamma=0.0, c=0.47)
"""Their dense Transformers, fitted on the same data: the like-for-like loss of the dense alternative."""
EXPANSION_RATE = 64
"""E of the fit: MoE layers of 64× a dense feed-forward's parameters (their main sweep)."""
FORWARD_BACKWARD_FLOPS = 6
"""c_f: FLOPs per active weight per token, forward and backward (their §6, as Kaplan/Chinchilla)."""
ROUTER_FLOPS = 14
"""c_r: FLOPs per router weight per token, the router matmul and routing together (their §6)."""
ASPECT_RATIO = 64
"""d_model = 64 · n_blocks, their §6 assumption for the optimum (inside llm/shape.py's 64-128 band)."""
GRANULARITIES = tuple(2 ** i for i in range(9))
"""G searched: powers of two from 1 to 256, as their table lists."""
FIT_RANGE = ((129e6, 3.7e9), (16e9, 130e9))
"""(N, D) of the runs the law was fitted on, as the paper's summaries quote them: past them it is extrapolated."""


@dataclass(frozen=True)
class MoEOptimum:
    """The law's compute-optimal point for a budget, in its own parametrisation (non-embedding counts)."""

    flops: float
    granularity: int
    n_active: float
    """Active non-embedding parameters, 12·d_model²·n_blocks."""
    n_total: float
    """Total non-embedding parameters (the law's N): attention 4·d² and experts 8·d²·E per block."""
    n_tokens: float
    loss: float


def _shape(n_active: float) -> tuple[float, float]:
    """(n_blocks, d_model) of a model of `n_active` active non-embedding parameters at d_model = 64 · n_blocks."""
    n_blocks = (n_active / (12 * ASPECT_RATIO ** 2)) ** (1 / 3)
    return n_blocks, ASPECT_RATIO * n_blocks


def krajewski_flops_per_token(n_active: float, granularity: float, expansion: float = EXPANSION_RATE) -> float:
    """Their §6 training FLOPs per token: (12·d²·c_f + d·E·G·c_r) · n_blocks."""
    n_blocks, d = _shape(n_active)
    return (12 * d * d * FORWARD_BACKWARD_FLOPS + d * expansion * granularity * ROUTER_FLOPS) * n_blocks


def total_params(n_active: float, expansion: float = EXPANSION_RATE) -> float:
    """The law's N for a model of `n_active` active parameters: 4·d² attention + 8·d²·E experts per block."""
    n_blocks, d = _shape(n_active)
    return n_blocks * (4 * d * d + 8 * d * d * expansion)


def compute_optimal_moe(flops: float, law: GranularLaw = KRAJEWSKI_2024_MOE,
                        granularities: tuple[int, ...] = GRANULARITIES) -> MoEOptimum:
    """The (G, N, D) minimising `law` under their compute model for `flops` FLOPs: for each G, a golden-section
    search over log N_active (the loss is unimodal in it at fixed F), then the best G. ConfigError if flops <= 0."""
    if not flops > 0:
        raise ConfigError(f"flops={flops} must be positive")

    def point(log_n: float, gran: int) -> MoEOptimum:
        n_active = math.exp(log_n)
        d = flops / krajewski_flops_per_token(n_active, gran)
        n_total = total_params(n_active)
        return MoEOptimum(flops, gran, n_active, n_total, d, law.loss(n_total, d, gran))

    best = None
    for gran in granularities:
        lo, hi = math.log(1e4), math.log(flops / 6)  # from tiny to one token
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(200):
            x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            if point(x1, gran).loss < point(x2, gran).loss:
                hi = x2
            else:
                lo = x1
        cand = point((lo + hi) / 2, gran)
        if best is None or cand.loss < best.loss:
            best = cand
    return best
