"""Compute-optimal scaling laws: how to split a FLOP budget C between parameters N and tokens D.

Conventions (Hoffmann et al. 2022, "Chinchilla", arXiv:2203.15556):
  * N is the *total* parameter count, embeddings included (Chinchilla counts all parameters; Kaplan et al.
    2020 excluded embeddings, which is one reason their exponent differs, see Pearce & Song 2024,
    arXiv:2406.12907).
  * C = 6·N·D training FLOPs (forward + backward, attention FLOPs ignored).
  * Losses are nats per token on Chinchilla's MassiveText with its tokenizer: the absolute values of
    `predicted_loss` do not transfer to another dataset or tokenizer; the allocation N/D does, roughly.

Two kinds of frontier:
  * `PowerLawFrontier` (Approaches 1 and 2): N_opt = k·C^a, D_opt = C / (6·N_opt). The paper prints the
    exponents (Table 2) but not k; k is fitted here, with the exponent held at the printed value, to the
    paper's own projections (Table 3 for Approach 1, Table A3 for Approach 2), so the frontier reproduces
    those rows. b = 1 - a follows from C = 6ND.
  * `ParametricLaw` (Approach 3 and Besiroglu et al. 2024): L(N, D) = E + A/N^α + B/D^β, whose minimum
    under C = 6ND has the closed form of Chinchilla eq. 4:
        N_opt = G·(C/6)^a,  D_opt = G⁻¹·(C/6)^b,  G = (αA / (βB))^(1/(α+β)),  a = β/(α+β),  b = α/(α+β).

No torch here: a plan is made before anything trains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typed_yaml import ConfigError


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (N total parameters, D tokens, L in nats/token)."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def loss(self, n_params: float, n_tokens: float) -> float:
        return self.E + self.A / n_params ** self.alpha + self.B / n_tokens ** self.beta

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising the loss under 6·N·D = flops (Chinchilla eq. 4)."""
        n = self.G * (flops / 6.0) ** self.a
        return n, flops / (6.0 * n)


@dataclass(frozen=True)
class PowerLawFrontier:
    """N_opt = k·C^a and D_opt = C / (6·N_opt), so D_opt ∝ C^(1-a)."""

    name: str
    a: float
    k: float
    source: str = ""

    @property
    def b(self) -> float:
        return 1.0 - self.a

    def optimal(self, flops: float) -> tuple[float, float]:
        n = self.k * flops ** self.a
        return n, flops / (6.0 * n)


# ---------------------------------------------------------------------------------------------------------
# Published rows: (N parameters, C FLOPs, D tokens), exactly as printed.

# Hoffmann et al. 2022, Table 3: Approach 1 projections.
HOFFMANN_2022_TABLE3 = (
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
)

# Hoffmann et al. 2022, Table A3, Approach 2 columns.
HOFFMANN_2022_TABLE_A3_APPROACH2 = (
    (400e6, 1.84e19, 7.7e9),
    (1e9, 1.20e20, 20.0e9),
    (10e9, 1.32e22, 219.5e9),
    (67e9, 6.88e23, 1.7e12),
    (175e9, 4.54e24, 4.3e12),
    (280e9, 1.18e25, 7.1e12),
    (520e9, 4.19e25, 13.4e12),
    (1e12, 1.59e26, 26.5e12),
    (10e12, 1.75e28, 292.0e12),
)

# Hoffmann et al. 2022, Table A3, Approach 3 columns. The 175B row prints 1.26e24 FLOPs, which is below the
# 67B row and contradicts its own 12.0T tokens (6·175e9·12.0e12 = 1.26e25): a typo, corrected here.
HOFFMANN_2022_TABLE_A3_APPROACH3 = (
    (400e6, 2.21e19, 9.2e9),
    (1e9, 1.62e20, 27.1e9),
    (10e9, 2.46e22, 410.1e9),
    (67e9, 1.71e24, 4.1e12),
    (175e9, 1.26e25, 12.0e12),
    (280e9, 3.52e25, 20.1e12),
    (520e9, 1.36e26, 43.5e12),
    (1e12, 5.65e26, 94.1e12),
    (10e12, 8.55e28, 1425.5e12),
)


def _fit_k(rows, a: float) -> float:
    # Least squares in log space with the exponent held fixed: log k = mean(log N - a·log C).
    return math.exp(sum(math.log(n) - a * math.log(c) for n, c, _ in rows) / len(rows))


# Hoffmann et al. 2022, Table 2: Approach 1 (training-curve envelope) a = 0.50, b = 0.50.
HOFFMANN_2022_APPROACH1 = PowerLawFrontier(
    "hoffmann2022-approach1", a=0.50, k=_fit_k(HOFFMANN_2022_TABLE3, 0.50),
    source="Hoffmann et al. 2022 (arXiv:2203.15556) Table 2 exponent; k fitted to Table 3")

# Hoffmann et al. 2022, Table 2: Approach 2 (IsoFLOP profiles) a = 0.49, b = 0.51.
HOFFMANN_2022_APPROACH2 = PowerLawFrontier(
    "hoffmann2022-approach2", a=0.49, k=_fit_k(HOFFMANN_2022_TABLE_A3_APPROACH2, 0.49),
    source="Hoffmann et al. 2022 (arXiv:2203.15556) Table 2 exponent; k fitted to Table A3 (Approach 2)")

# Hoffmann et al. 2022, eq. 10 / App. D.2, as printed in the body: α = 0.34, β = 0.28 (rounded). Besiroglu et
# al. 2024 show this rounding biases the frontier badly (N_opt 18-30% too small against Table A3).
HOFFMANN_2022_APPROACH3_ROUNDED = ParametricLaw(
    "hoffmann2022-approach3-rounded", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
    source="Hoffmann et al. 2022 (arXiv:2203.15556) eq. 10, exponents as printed")

# The same fit with the exponents as they appear in the paper's TeX source (α = 0.3392, β = 0.2849), quoted by
# Besiroglu et al. 2024 (arXiv:2404.10102). These track Table A3's Approach-3 rows (N_opt within 8%); the
# rounded ones do not. a = 0.4565, the Table 2 value 0.46.
HOFFMANN_2022_APPROACH3 = ParametricLaw(
    "hoffmann2022-approach3", E=1.69, A=406.4, B=410.7, alpha=0.3392, beta=0.2849,
    source="Hoffmann et al. 2022 (arXiv:2203.15556) App. D.2, unrounded exponents per Besiroglu et al. 2024")

# Besiroglu, Erdil, Barnett & You 2024, "Chinchilla Scaling: A Replication Attempt" (arXiv:2404.10102): a refit
# of Approach 3 on data reconstructed from Chinchilla's Fig. 4, with an optimiser run to convergence. Its
# frontier agrees with Approaches 1 and 2 (about 20 tokens per parameter); our recommended default.
BESIROGLU_2024 = ParametricLaw(
    "besiroglu2024", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
    source="Besiroglu et al. 2024 (arXiv:2404.10102), refit of Chinchilla Approach 3")

LAWS: dict[str, ParametricLaw | PowerLawFrontier] = {
    "1": HOFFMANN_2022_APPROACH1,
    "2": HOFFMANN_2022_APPROACH2,
    "3": HOFFMANN_2022_APPROACH3,
    "3-rounded": HOFFMANN_2022_APPROACH3_ROUNDED,
    "besiroglu": BESIROGLU_2024,
}
DEFAULT_APPROACH = "besiroglu"


def get_law(approach: str | ParametricLaw | PowerLawFrontier) -> ParametricLaw | PowerLawFrontier:
    """Resolve an approach name ('1', '2', '3', '3-rounded', 'besiroglu') or pass a law through.

    Raises ValueError naming the known approaches.
    """
    if isinstance(approach, (ParametricLaw, PowerLawFrontier)):
        return approach
    key = str(approach).strip().lower()
    if key not in LAWS:
        raise ConfigError(f"unknown scaling approach {approach!r}; known: {', '.join(LAWS)}")
    return LAWS[key]


def compute_optimal(flops: float, approach: str | ParametricLaw | PowerLawFrontier = DEFAULT_APPROACH
                    ) -> tuple[float, float]:
    """Compute-optimal (N params, D tokens) for a budget of `flops` training FLOPs, with 6·N·D = flops.

    Raises ValueError for a non-positive budget or an unknown approach.
    """
    if not flops > 0 or not math.isfinite(flops):
        raise ConfigError(f"flops={flops} must be a positive finite number")
    return get_law(approach).optimal(float(flops))


def compute_for_params(n_params: float, approach: str | ParametricLaw | PowerLawFrontier = DEFAULT_APPROACH
                       ) -> float:
    """The budget C whose compute-optimal N is `n_params`: the inverse of compute_optimal's N. Every law here
    has N_opt ∝ C^a, so N_opt(1)·C^a = n_params solves exactly. Raises ValueError for a non-positive N."""
    if not n_params > 0 or not math.isfinite(n_params):
        raise ConfigError(f"n_params={n_params} must be a positive finite number")
    law = get_law(approach)
    n_at_one, _ = law.optimal(1.0)
    return (n_params / n_at_one) ** (1.0 / law.a)


def predicted_loss(n_params: float, n_tokens: float, law: ParametricLaw | str = DEFAULT_APPROACH) -> float:
    """L(N, D) in nats/token on Chinchilla's data under a parametric law (Approach 3 or Besiroglu)."""
    law = get_law(law)
    if not isinstance(law, ParametricLaw):
        raise ConfigError(f"{law.name} is a frontier, not a loss law; use approach '3' or 'besiroglu'")
    if n_params <= 0 or n_tokens <= 0:
        raise ConfigError(f"n_params={n_params} and n_tokens={n_tokens} must be positive")
    return law.loss(n_params, n_tokens)
