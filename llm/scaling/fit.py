"""Fit your own scaling law from (N, D, final loss) rows of isoFLOP runs.

Two estimators, as in Hoffmann et al. 2022 (arXiv:2203.15556):
  * `fit_isoflop` (Approach 2; the per-budget parabola is also PaLM 2's method, arXiv:2305.10403 §2): group
    rows by budget C = 6·N·D, fit a parabola to loss against log10 N within each budget, take its vertex as
    N_opt(C), then fit N_opt ∝ C^a and D_opt ∝ C^b by least squares in log space.
  * `fit_parametric` (Approach 3, App. D.2): L(N, D) = E + A/N^α + B/D^β, fitted by minimising the Huber loss
    (δ = 1e-3) between log L̂ and log L with L-BFGS, started from the best points of Chinchilla's grid.

N is whatever the caller counts (use total parameters to match llm.scaling.laws's laws). Requires numpy and
scipy (scipy.optimize L-BFGS-B); no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from llm.scaling.laws import ParametricLaw
from typed_yaml import ConfigError


def _as_rows(rows) -> np.ndarray:
    arr = np.asarray(rows, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ConfigError(f"rows must be (N, D, loss) triples; got an array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError("every N, D and loss must be positive and finite")
    return arr


# ---------------------------------------------------------------------------------------------------------
# Approach 2: isoFLOP parabolas, then power laws.


@dataclass
class IsoFlopBudget:
    """One budget's parabola loss = c0 + c1·x + c2·x², x = log10 N."""

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    coeffs: tuple[float, float, float]
    n_points: int
    rms_residual: float
    """RMS of loss − parabola over this budget's runs (nats)."""
    vertex_inside: bool
    """False when N_opt lies outside the sampled N range (an extrapolated vertex: sample wider)."""


@dataclass
class PowerLaw:
    """y = k · C^exponent, fitted in log10 space."""

    exponent: float
    k: float
    rms_residual_dex: float
    """RMS of log10 y − log10 fit over the budgets."""

    def __call__(self, flops: float) -> float:
        return self.k * flops ** self.exponent


@dataclass
class IsoFlopFit:
    budgets: list[IsoFlopBudget]
    n_opt: PowerLaw
    """N_opt ∝ C^a."""
    d_opt: PowerLaw
    """D_opt ∝ C^b."""

    @property
    def a(self) -> float:
        return self.n_opt.exponent

    @property
    def b(self) -> float:
        return self.d_opt.exponent


def _group_by_budget(arr: np.ndarray, rel_tol: float) -> list[np.ndarray]:
    flops = 6.0 * arr[:, 0] * arr[:, 1]
    order = np.argsort(flops)
    groups, current, anchor = [], [], None
    for i in order:
        if anchor is not None and flops[i] > anchor * (1 + rel_tol):
            groups.append(arr[current])
            current = []
            anchor = None
        if anchor is None:
            anchor = flops[i]
        current.append(i)
    groups.append(arr[current])
    return groups


def _power_law(flops: np.ndarray, y: np.ndarray) -> PowerLaw:
    lx, ly = np.log10(flops), np.log10(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    return PowerLaw(float(slope), float(10 ** intercept), float(np.sqrt(np.mean(resid ** 2))))


def fit_isoflop(rows, rel_tol: float = 0.05) -> IsoFlopFit:
    """Fit one parabola per FLOP budget and power laws through the vertices.

    rows: (N, D, final loss) triples; runs whose 6·N·D agree within `rel_tol` share a budget. Raises
    ValueError if fewer than two budgets have at least three runs, or a budget's parabola opens downwards.
    """
    arr = _as_rows(rows)
    budgets = []
    for g in _group_by_budget(arr, rel_tol):
        if len(g) < 3:
            continue
        flops = float(np.exp(np.mean(np.log(6.0 * g[:, 0] * g[:, 1]))))
        x, loss = np.log10(g[:, 0]), g[:, 2]
        c2, c1, c0 = np.polyfit(x, loss, 2)
        if c2 <= 0:
            raise ConfigError(f"budget C={flops:.3g}: loss against log N is not convex (curvature {c2:.3g}); "
                             "sample model sizes on both sides of the optimum")
        x_opt = -c1 / (2 * c2)
        n_opt = 10 ** x_opt
        resid = loss - (c0 + c1 * x + c2 * x ** 2)
        budgets.append(IsoFlopBudget(
            flops=flops, n_opt=float(n_opt), d_opt=float(flops / (6 * n_opt)),
            loss_opt=float(c0 + c1 * x_opt + c2 * x_opt ** 2), coeffs=(float(c0), float(c1), float(c2)),
            n_points=len(g), rms_residual=float(np.sqrt(np.mean(resid ** 2))),
            vertex_inside=bool(x.min() <= x_opt <= x.max())))
    if len(budgets) < 2:
        raise ConfigError(f"need at least two budgets with three or more runs each; found {len(budgets)}")
    c = np.array([b.flops for b in budgets])
    return IsoFlopFit(budgets=budgets, n_opt=_power_law(c, np.array([b.n_opt for b in budgets])),
                      d_opt=_power_law(c, np.array([b.d_opt for b in budgets])))


# ---------------------------------------------------------------------------------------------------------
# Approach 3: parametric fit, Huber loss on log L, L-BFGS from a grid.

# Hoffmann et al. 2022, App. D.2: initialisation grid and Huber δ.
CHINCHILLA_GRID = {
    "alpha": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "beta": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
    "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
}
HUBER_DELTA = 1e-3


@dataclass
class ParametricFit:
    law: ParametricLaw
    objective: float
    """Sum over runs of Huber_δ(log L̂ − log L) / δ² at the optimum."""
    rms_residual: float
    """RMS of log L̂ − log L (≈ relative error of the predicted loss)."""
    max_abs_residual: float
    n_points: int
    converged: bool
    starts: list[float] = field(default_factory=list, repr=False)
    """Final objective from each L-BFGS start (for judging how multimodal the fit was)."""


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    # theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e) (App. D.2 parameterisation).
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    lse = logsumexp(terms, axis=0)
    r = lse - log_l
    small = np.abs(r) <= delta
    # Divided by δ² so the objective is O(number of runs): Besiroglu et al. 2024 (arXiv:2404.10102) trace
    # Chinchilla's unconverged fit to an optimiser stopping on a loss whose scale (~1e-6) sat below its
    # tolerance. We also set ftol to 0 and stop on the gradient norm.
    huber = np.where(small, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)) / delta ** 2
    dr = np.where(small, r, delta * np.sign(r)) / delta ** 2
    w = np.exp(terms - lse)  # softmax weights: d lse / d term
    grad = np.array([
        np.sum(dr * w[0]), np.sum(dr * w[1]), np.sum(dr * w[2]),
        -np.sum(dr * w[0] * log_n), -np.sum(dr * w[1] * log_d)])
    return float(np.sum(huber)), grad


def _grid_objectives(grid: np.ndarray, log_n, log_d, log_l, delta) -> np.ndarray:
    a, b, e, alpha, beta = (grid[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(grid), len(log_n)))])
    r = logsumexp(terms, axis=0) - log_l
    return np.sum(np.where(np.abs(r) <= delta, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)), axis=1)


def fit_parametric(rows, delta: float = HUBER_DELTA, grid: dict[str, np.ndarray] | None = None,
                   n_starts: int | None = 16, name: str = "fitted") -> ParametricFit:
    """Fit L(N, D) = E + A/N^α + B/D^β to (N, D, final loss) rows (Chinchilla App. D.2).

    Every point of `grid` (default: Chinchilla's, 4,500 points) is scored; L-BFGS then runs from the
    `n_starts` best (None: from all of them, as the paper did) and the lowest objective wins. Raises
    ValueError with fewer than five rows (five free constants).
    """
    arr = _as_rows(rows)
    if len(arr) < 5:
        raise ConfigError(f"need at least 5 runs to fit 5 constants; got {len(arr)}")
    log_n, log_d, log_l = np.log(arr[:, 0]), np.log(arr[:, 1]), np.log(arr[:, 2])
    g = grid or CHINCHILLA_GRID
    mesh = np.array(np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij")).reshape(5, -1).T
    scores = _grid_objectives(mesh, log_n, log_d, log_l, delta)
    order = np.argsort(scores, kind="stable")
    starts = mesh[order if n_starts is None else order[:n_starts]]

    best, finals = None, []
    for theta0 in starts:
        res = minimize(_objective, theta0, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                       options={"maxiter": 20000, "ftol": 0.0, "gtol": 1e-10, "maxcor": 30})
        finals.append(float(res.fun))
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    with np.errstate(over="ignore"):  # a log-constant past ~709 (a fit run off) comes back as inf, not an error
        big_e, big_a, big_b = (float(x) for x in np.exp([e, a, b]))
    law = ParametricLaw(name, E=big_e, A=big_a, B=big_b, alpha=float(alpha), beta=float(beta),
                        source="fitted with llm.scaling.fit.fit_parametric")
    # In log space, as the objective: exponents the data cannot pin down may overflow N^α in linear space.
    resid = np.logaddexp(e, np.logaddexp(a - alpha * log_n, b - beta * log_d)) - log_l
    grad_norm = float(np.linalg.norm(_objective(best.x, log_n, log_d, log_l, delta)[1]))
    return ParametricFit(law=law, objective=float(best.fun), rms_residual=float(np.sqrt(np.mean(resid ** 2))),
                         max_abs_residual=float(np.max(np.abs(resid))), n_points=len(arr),
                         converged=bool(best.success or grad_norm < 1e-6), starts=finals)
