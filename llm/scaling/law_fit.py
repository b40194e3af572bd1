"""Fitting a sweep's law: its finished runs → the law.json document (llm/scaling/law.py writes and reads it).

`fit_law(points)` takes each finished run's (budget C, N, D, final eval loss) and fits, with llm/scaling/fit.py:
  * per budget, the parabola of loss in log10 N and its vertex (N_opt, D_opt = C / 6N_opt, the minimum loss):
    Chinchilla Approach 2 (Hoffmann et al. 2022, arXiv:2203.15556, §3.2) and PaLM 2 (arXiv:2305.10403, §2);
  * N_opt ∝ C^a and D_opt ∝ C^b through the vertices, with percentile bootstrap intervals: the runs of each
    budget are resampled with replacement (a resample keeps at least three distinct sizes, or the parabola is
    undetermined), every parabola and both power laws refitted, `resamples` times from a seeded generator.
    OLMo's model ladder reports its fit the same way; with three sizes per budget a resample either repeats
    the fit or drops a size, so the interval then says little beyond the spread of the vertices;
  * the parametric L(N, D) = E + A/N^α + B/D^β by Chinchilla App. D.2's Huber fit, with per-run residuals,
    once there are PARAMETRIC_MIN_POINTS runs (two per constant).
A budget whose parabola opens downwards, or whose minimum lies outside the sizes it ran (the sizes sampled sit on
one side of the optimum), is listed under `excluded_budgets` with that reason and left out of the power laws.
No torch here.
"""
from __future__ import annotations

import math

import numpy as np

from llm.scaling.fit import fit_isoflop, fit_parametric
from llm.scaling.law import DEFAULT_CONFIDENCE, EXPONENT_RANGE, LAW_FORMAT
from typed_yaml import ConfigError

PARAMETRIC_MIN_POINTS = 10
"""Five constants: at least two runs per constant before the Huber fit is attempted."""
DEFAULT_RESAMPLES = 1000


class LawFitError(ConfigError):
    """Too few budgets with a convex parabola; `excluded` lists each budget left out and why."""

    def __init__(self, message: str, excluded: list[dict]):
        super().__init__(message)
        self.excluded = excluded


def _percentiles(values: list[float], confidence: float) -> list[float] | None:
    if not values:
        return None
    tail = 50 * (1 - confidence)
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def _vertex(rows: np.ndarray) -> tuple[float, float]:
    """(curvature c2, log10 N of the vertex) of the budget's parabola; fit_isoflop then refits it for the record."""
    c2, c1, _ = np.polyfit(np.log10(rows[:, 0]), rows[:, 2], 2)
    return float(c2), float(-c1 / (2 * c2)) if c2 else math.inf


def resample_budget(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One budget's (N, D, loss) rows drawn with replacement, keeping at least three distinct sizes (else the
    parabola is undetermined; after 100 tries the rows themselves)."""
    for _ in range(100):
        pick = rows[rng.integers(0, len(rows), len(rows))]
        if len(np.unique(pick[:, 0])) >= 3:
            return pick
    return rows


def fit_law(points: list[dict], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
            confidence: float = DEFAULT_CONFIDENCE, parametric: bool = True) -> dict:
    """The law.json document for finished runs `points`: dicts with flops, n_params, n_tokens (D = C / 6N) and
    loss (final eval loss, nats/token), plus anything else to record (name, tokens_trained, ...).

    parametric: attempt the Approach-3 fit (slow: L-BFGS from 16 starts) when there are enough runs.
    Raises LawFitError when fewer than two budgets have a convex parabola (three or more sizes, minimum inside).
    """
    by_budget: dict[float, list[dict]] = {}
    for p in points:
        by_budget.setdefault(float(p["flops"]), []).append(p)
    kept, excluded = {}, []
    for c, group in sorted(by_budget.items()):
        rows = np.array([[p["n_params"], p["n_tokens"], p["loss"]] for p in group], dtype=float)
        if len(rows) < 3:
            excluded.append({"flops": c, "reason": f"only {len(rows)} finished runs (a parabola needs 3)"})
        elif _vertex(rows)[0] <= 0:
            best = int(np.argmin(rows[:, 2]))
            side = ("the smallest size sampled is the best: the optimum lies below it" if best == 0 else
                    "the largest size sampled is the best: the optimum lies above it" if best == len(rows) - 1 else
                    "no minimum inside the sizes sampled")
            excluded.append({"flops": c, "reason": f"loss against log N opens downwards ({side}; move or widen "
                             "this budget's grid)"})
        elif not np.log10(rows[:, 0].min()) <= _vertex(rows)[1] <= np.log10(rows[:, 0].max()):
            # An extrapolated vertex is an N_opt the runs do not show: a power law through it would be a guess.
            excluded.append({"flops": c, "reason": f"the parabola's minimum, N = {10 ** _vertex(rows)[1]:.3g}, lies "
                             f"outside the sizes run ({rows[:, 0].min():.3g} to {rows[:, 0].max():.3g}): move this "
                             "budget's grid towards it"})
        else:
            kept[c] = rows
    if len(kept) < 2:
        why = "; ".join(f"C={e['flops']:.3g}: {e['reason']}" for e in excluded)
        raise LawFitError(f"need two budgets whose parabola has its minimum inside the sizes run, have {len(kept)}" +
                          (f" ({why})" if why else ""), excluded)
    fit = fit_isoflop(np.concatenate(list(kept.values())))

    rng = np.random.default_rng(seed)
    a_s, b_s, samples, n_opts, failed = [], [], [], [[] for _ in kept], 0
    for _ in range(resamples):
        try:
            f = fit_isoflop(np.concatenate([resample_budget(r, rng) for r in kept.values()]))
        except ValueError:  # a resample whose parabola opens downwards
            failed += 1
            continue
        a_s.append(f.a)
        b_s.append(f.b)
        samples.append([f.a, math.log10(f.n_opt.k)])
        for i, b in enumerate(f.budgets):
            n_opts[i].append(b.n_opt)

    if len(fit.budgets) != len(kept):
        raise ConfigError(f"the runs of {len(kept)} budgets grouped into {len(fit.budgets)} by 6ND: space the budgets "
                         "further apart")
    budgets = []
    for i, (c, b) in enumerate(zip(kept, fit.budgets)):
        c0, c1, c2 = b.coeffs
        budgets.append({
            "flops": c, "flops_6nd": b.flops, "n_points": b.n_points,
            "parabola": {"x": "log10 N", "c0": c0, "c1": c1, "c2": c2},
            "n_opt": b.n_opt, "d_opt": b.d_opt, "loss_opt": b.loss_opt,
            "n_opt_interval": _percentiles(n_opts[i], confidence),
            "rms_residual": b.rms_residual, "vertex_inside": b.vertex_inside})
    doc = {
        "format": LAW_FORMAT,
        "counting": {"N": "total parameters, embeddings included (Chinchilla)", "C": "6ND FLOPs",
                     "loss": "final eval loss, nats/token on the sweep's validation split"},
        "budgets": budgets,
        "excluded_budgets": excluded,
        "n_opt": {"a": fit.a, "k": fit.n_opt.k, "a_interval": _percentiles(a_s, confidence),
                  "rms_residual_dex": fit.n_opt.rms_residual_dex},
        "d_opt": {"b": fit.b, "k": fit.d_opt.k, "b_interval": _percentiles(b_s, confidence),
                  "rms_residual_dex": fit.d_opt.rms_residual_dex},
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": confidence, "failed": failed,
                      "method": "runs resampled with replacement within each budget (at least 3 distinct sizes); "
                                "percentile interval",
                      "samples": samples},
        "parametric": _parametric(points) if parametric else {"skipped": "not requested"},
        "points": points,
    }
    return doc


def _parametric(points: list[dict]) -> dict:
    if len(points) < PARAMETRIC_MIN_POINTS:
        return {"skipped": f"{len(points)} runs; the 5-constant fit needs at least {PARAMETRIC_MIN_POINTS}"}
    # The tokens each run actually trained on (whole steps: up to one batch past C / 6N); the parabolas use the
    # nominal D so that a budget's runs share one C.
    tokens = [float(p.get("tokens_trained") or p["n_tokens"]) for p in points]
    rows = np.array([[p["n_params"], d, p["loss"]] for p, d in zip(points, tokens)], dtype=float)
    f = fit_parametric(rows, name="sweep-parametric")
    law = f.law
    lo, hi = EXPONENT_RANGE
    sane = lo <= law.alpha <= hi and lo <= law.beta <= hi and all(math.isfinite(x) for x in (law.E, law.A, law.B))
    # Only in range can N^α be evaluated in floats (α = 65 overflowed it).
    predicted = [law.loss(p["n_params"], d) for p, d in zip(points, tokens)] if sane else []
    if not sane or not all(math.isfinite(y) and y > 0 for y in predicted):
        # No loss law, rather than one that plan.py would extrapolate with.
        n_budgets = len({p["flops"] for p in points})
        return {"skipped": f"the 5-constant fit diverged (α = {law.alpha:.3g}, β = {law.beta:.3g}, A = {law.A:.3g}, "
                           f"B = {law.B:.3g}; exponents outside {lo:g}-{hi:g} are not a law): {len(points)} runs on "
                           f"{n_budgets} budgets do not determine it; more budgets would"}
    residuals = [{"name": p.get("name"), "n_params": p["n_params"], "n_tokens": d, "loss": p["loss"],
                  "predicted": y, "log_residual": math.log(y / p["loss"])}
                 for p, d, y in zip(points, tokens, predicted)]
    return {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta, "a": law.a, "b": law.b,
            "objective": f.objective, "rms_residual": f.rms_residual, "max_abs_residual": f.max_abs_residual,
            "converged": f.converged, "method": "Chinchilla App. D.2: Huber (delta 1e-3) on log L, L-BFGS from grid",
            "residuals": residuals}
