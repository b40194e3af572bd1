"""A scaling law fitted from a sweep's runs, as DIR/law.json: the one owner of that file (write_law, read_law,
check_law); llm/scaling/law_fit.py fits the document from the runs (`fit_law`).

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

from llm.scaling.laws import ParametricLaw, PowerLawFrontier
from llm.shape import SHAPE_RULES
from typed_yaml import ConfigError
from typed_yaml.files import atomic_write_text

LAW_FORMAT = "llm-forge isoflop law v1"
EXPONENT_RANGE = (0.0, 2.0)
"""α and β outside this span (that of Chinchilla App. D.2's initialisation grid) mean the fit ran off to where the
runs do not constrain it: 20 runs on two budgets gave α = 51-65 with A ≈ 1e236-1e302."""
DEFAULT_CONFIDENCE = 0.90


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
