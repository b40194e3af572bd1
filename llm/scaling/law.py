"""A scaling law fitted from a sweep's runs, as DIR/law.json, and read back as a law plan() can use.

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

`read_law(path)` gives a `SweepLaw`: a PowerLawFrontier (N_opt = k·C^a) carrying its bootstrap samples, so
the interval of N_opt at any budget can be stated, and the parametric fit (if any) as the loss law.
No torch here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm.scaling.fit import fit_isoflop, fit_parametric
from llm.scaling.laws import ParametricLaw, PowerLawFrontier
from llm.shape import SHAPE_RULES
from typed_yaml import ConfigError
from typed_yaml.files import atomic_write_text

LAW_FORMAT = "llm-forge isoflop law v1"
PARAMETRIC_MIN_POINTS = 10
"""Five constants: at least two runs per constant before the Huber fit is attempted."""
EXPONENT_RANGE = (0.0, 2.0)
"""α and β outside this span (that of Chinchilla App. D.2's initialisation grid) mean the fit ran off to where the
runs do not constrain it: 20 runs on two budgets gave α = 51-65 with A ≈ 1e236-1e302."""
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.90


class LawFitError(ConfigError):
    """Too few budgets with a convex parabola; `excluded` lists each budget left out and why."""

    def __init__(self, message: str, excluded: list[dict]):
        super().__init__(message)
        self.excluded = excluded


class LawFileError(ConfigError):
    """A law.json that is missing, not JSON, not a sweep's law, or holds a constant no fit can produce; the message
    names the file and the key."""


MAX_LOSS_FLOOR = 20.0
"""Largest parametric E (nats/token) a law.json may carry: ln V of a 485-million-token vocabulary. A loss floor
above it is no fit of a language model, and plan.py would print it as the predicted loss."""


def _constant(doc: dict, dotted: str, rule: str, ok) -> float:
    """doc's number at `dotted`, or LawFileError (without the file; read_law adds it) naming the key and `rule`."""
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise LawFileError(f"{dotted} is missing")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise LawFileError(f"{dotted} = {node!r} must be a number {rule}")
    if not math.isfinite(node) or not ok(node):
        raise LawFileError(f"{dotted} = {node!r} must be a finite number {rule}")
    return float(node)


def check_law(doc: dict) -> None:
    """Raise LawFileError naming the first key of a law document whose value no fit produces: NaN, infinite,
    negative or out-of-range constants (a hand-edited or corrupted file), which plan() would otherwise turn into
    a loss of NaN or 1e12, or an OverflowError blamed on the budget."""
    a = _constant(doc, "n_opt.a", "in (0, 1) (N_opt ∝ C^a and D_opt ∝ C^(1-a) both grow with C)", lambda x: 0 < x < 1)
    k = _constant(doc, "n_opt.k", "> 0 (N_opt = k·C^a)", lambda x: x > 0)
    _constant(doc, "bootstrap.confidence", "in (0, 1)", lambda x: 0 < x < 1)
    samples = (doc.get("bootstrap") or {}).get("samples")
    if not isinstance(samples, list):
        raise LawFileError("bootstrap.samples must be a list of [a, log10 k] pairs")
    for i, pair in enumerate(samples):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in pair)):
            raise LawFileError(f"bootstrap.samples[{i}] = {pair!r} must be a pair of finite numbers [a, log10 k]")
    budgets = doc.get("budgets")
    if not isinstance(budgets, list) or not budgets:
        raise LawFileError("budgets must list the fitted budgets (a law is fitted on at least two)")
    for i, b in enumerate(budgets):
        c = b.get("flops") if isinstance(b, dict) else None
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
            raise LawFileError(f"budgets[{i}].flops = {c!r} must be a finite number > 0 (FLOPs)")
        n = k * c ** a
        if not 1 <= n <= c / 6:
            raise LawFileError(f"n_opt.k = {k:g} with n_opt.a = {a:g} gives N_opt = {n:.3g} at budgets[{i}].flops = "
                               f"{c:.3g}: outside [1, C/6] (at least one token per parameter)")
    par = doc.get("parametric") or {}
    if "E" in par:
        lo, hi = EXPONENT_RANGE
        _constant(doc, "parametric.E", f"in [0, {MAX_LOSS_FLOOR:g}] nats/token (the irreducible loss)",
                  lambda x: 0 <= x <= MAX_LOSS_FLOOR)
        for key in ("A", "B"):
            _constant(doc, f"parametric.{key}", "> 0", lambda x: x > 0)
        for key in ("alpha", "beta"):
            _constant(doc, f"parametric.{key}", f"in ({lo:g}, {hi:g}] (EXPONENT_RANGE)", lambda x: lo < x <= hi)


@dataclass(frozen=True)
class SweepLaw(PowerLawFrontier):
    """N_opt = k·C^a fitted by a sweep; D_opt = C / 6N_opt. `samples` are the bootstrap (a, log10 k) pairs."""

    samples: tuple[tuple[float, float], ...] = ()
    confidence: float = DEFAULT_CONFIDENCE
    flops_range: tuple[float, float] = (0.0, 0.0)
    """Smallest and largest budget the law was fitted on."""
    loss_law: ParametricLaw | None = None
    """The sweep's parametric fit: what plan() predicts the loss with (on the sweep's data and tokenizer)."""
    shapes: str = "standard"
    """The shape rules (llm/shape.py SHAPE_RULES) of the sweep's models: what plan.py designs with by default."""

    def n_opt_interval(self, flops: float) -> tuple[float, float] | None:
        """The bootstrap interval of N_opt at `flops` (None without samples)."""
        if not self.samples:
            return None
        s = np.asarray(self.samples)
        n = 10 ** (s[:, 1] + s[:, 0] * math.log10(flops))
        tail = 50 * (1 - self.confidence)
        return float(np.percentile(n, tail)), float(np.percentile(n, 100 - tail))

    def a_interval(self) -> tuple[float, float] | None:
        if not self.samples:
            return None
        tail = 50 * (1 - self.confidence)
        a = np.asarray(self.samples)[:, 0]
        return float(np.percentile(a, tail)), float(np.percentile(a, 100 - tail))

    def describe(self, flops: float) -> str:
        """One line for plan.py: the exponent and N_opt at `flops` with their intervals, and how far it extrapolates."""
        pct = f"{self.confidence:.0%}"
        a_ci, n_ci = self.a_interval(), self.n_opt_interval(flops)
        n_opt = self.optimal(flops)[0]
        text = f"a = {self.a:.3f}"
        text += f" [{a_ci[0]:.3f}, {a_ci[1]:.3f}]" if a_ci else " (no bootstrap interval)"
        text += f", N_opt = {n_opt:.3g}" + (f" [{n_ci[0]:.3g}, {n_ci[1]:.3g}]" if n_ci else "")
        text += f" ({pct} bootstrap, {len(self.samples)} resamples)" if self.samples else ""
        lo, hi = self.flops_range
        if hi and not lo <= flops <= hi:
            text += f"; fitted on C in [{lo:.3g}, {hi:.3g}]: extrapolated {max(flops / hi, lo / flops):.3g}x"
        return text


def _percentiles(values: list[float], confidence: float) -> list[float] | None:
    if not values:
        return None
    tail = 50 * (1 - confidence)
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def _vertex(rows: np.ndarray) -> tuple[float, float]:
    """(curvature c2, log10 N of the vertex) of the budget's parabola; fit_isoflop then refits it for the record."""
    c2, c1, _ = np.polyfit(np.log10(rows[:, 0]), rows[:, 2], 2)
    return float(c2), float(-c1 / (2 * c2)) if c2 else math.inf


def _resample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
            f = fit_isoflop(np.concatenate([_resample(r, rng) for r in kept.values()]))
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


def write_law(path: str | Path, doc: dict) -> None:
    """Write law.json atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def read_law(path: str | Path, name: str | None = None) -> SweepLaw:
    """The law of a sweep's law.json. Raises LawFileError naming the file when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "law.json"
    if not path.is_file():
        raise LawFileError(f"--law {path}: no such file (launch/sweep.py writes DIR/law.json)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LawFileError(f"--law {path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != LAW_FORMAT:
        raise LawFileError(f"--law {path}: not a sweep law (expected \"format\": \"{LAW_FORMAT}\")")
    try:
        check_law(doc)
    except LawFileError as e:
        raise LawFileError(f"--law {path}: {e}; refit it with launch/sweep.py --out DIR --fit-only") from None
    try:
        n_opt, boot = doc["n_opt"], doc["bootstrap"]
        flops = [b["flops"] for b in doc["budgets"]]
        par = doc.get("parametric") or {}
        loss_law = None if "E" not in par else ParametricLaw(
            "sweep-parametric", E=par["E"], A=par["A"], B=par["B"], alpha=par["alpha"], beta=par["beta"],
            source=f"fitted by launch/sweep.py, {path}")
        shapes = str((doc.get("sweep") or {}).get("shapes", "standard"))  # laws written before --shapes: standard
        if shapes not in SHAPE_RULES:
            raise LawFileError(f"--law {path}: unknown shape rules {shapes!r} (known: {', '.join(SHAPE_RULES)})")
        return SweepLaw(name or f"sweep:{path}", a=float(n_opt["a"]), k=float(n_opt["k"]),
                        source=f"isoFLOP sweep {path} (Chinchilla Approach 2)",
                        samples=tuple((float(a), float(k)) for a, k in boot["samples"]),
                        confidence=float(boot["confidence"]), flops_range=(min(flops), max(flops)),
                        loss_law=loss_law, shapes=shapes)
    except (KeyError, TypeError, ValueError) as e:
        raise LawFileError(f"--law {path}: malformed law file ({type(e).__name__}: {e})") from None
