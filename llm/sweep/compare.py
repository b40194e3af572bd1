"""Families of one sweep compared (launch/sweep.py --family): the compute multiplier of each family over the
reference one at equal loss, on the sweep's own data.

For each family, from its finished runs (N the active parameters, the N of C = 6ND: llm/sweep/families.py):
  * its compute-optimal loss per budget, L*(C): the minimum of the budget's parabola in log10 N, from the sweep's
    own fit (llm/scaling/law_fit.py `fit_law`; a budget it excludes, with no minimum inside its sizes, is left out
    here too);
  * its frontier L*(C) = k · C^-slope (+ floor E, fixed, default 0), fitted by least squares in log(L - E) against
    log C (Kaplan et al. 2020, arXiv:2001.08361, §1.2, find L(C_min) a power law in compute);
  * the multiplier over the reference at loss L: C_ref(L) / C_family(L), C(L) = (k / (L - E))^(1 / slope), the
    reference's compute over the family's to reach the same loss (> 1: the family is cheaper), as Clark et al. 2022
    (arXiv:2202.01169, "effective parameter count") and Krajewski et al. 2024 (arXiv:2402.07871) state MoE gains.
    It is reported at losses both frontiers reach within their budgets (the overlap of their L* ranges: its two
    ends and its geometric middle); when they do not overlap, at the middle of the gap, flagged extrapolated.

Bootstrap (a percentile interval, 5-95% by default: law.py's DEFAULT_CONFIDENCE): each resample draws,
independently for every family and every budget the fit kept, that budget's finished runs with replacement (as
many as it has, at least three distinct sizes: llm/scaling/law_fit.py `resample_budget`); refits every parabola,
so every L*(C), and both frontiers; and evaluates the multiplier at the same losses as the point estimate. Runs
are what is resampled, not budgets: with two or three budgets a resample of budgets would often leave one, and no
frontier. A resample in which some parabola opens downwards is discarded and counted (`failed`). The seed makes
it repeatable. No torch here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from llm.scaling.fit import fit_isoflop
from llm.scaling.law import DEFAULT_CONFIDENCE
from llm.scaling.law_fit import LawFitError, fit_law, resample_budget
from typed_yaml import ConfigError
from typed_yaml.files import atomic_write_text

def fit_frontier(flops, loss, floor: float = 0.0) -> dict:
    """L = k · C^-slope + floor through (C, L*) pairs, least squares in log(L - floor) vs log C: {k, slope, floor,
    rms_residual_dex}. ConfigError when fewer than two budgets, or a loss is at or below the floor."""
    c, y = np.asarray(flops, dtype=float), np.asarray(loss, dtype=float) - floor
    if len(c) < 2:
        raise ConfigError(f"a frontier needs two budgets with a compute-optimal loss; have {len(c)}")
    if np.any(y <= 0):
        raise ConfigError(f"floor {floor} is not below every compute-optimal loss ({float(np.min(loss)):.4g})")
    lx, ly = np.log10(c), np.log10(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    return {"k": float(10 ** intercept), "slope": float(-slope), "floor": floor,
            "rms_residual_dex": float(np.sqrt(np.mean(resid ** 2)))}


def compute_for_loss(front: dict, loss) -> np.ndarray:
    """C (FLOPs) at which frontier `front` reaches `loss`: (k / (L - E))^(1 / slope); nan at or below the floor."""
    y = np.asarray(loss, dtype=float) - front["floor"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(y > 0, (front["k"] / y) ** (1.0 / front["slope"]), np.nan)


def _kept(points: list[dict]) -> tuple[dict, list[np.ndarray]]:
    """A family's optima per budget as the sweep fits them, and the (N, D, loss) rows of each budget kept."""
    law = fit_law(points, resamples=0, parametric=False)
    rows = [np.array([[p["n_params"], p["n_tokens"], p["loss"]] for p in points if p["flops"] == b["flops"]],
                     dtype=float) for b in law["budgets"]]
    return law, rows


def _percentiles(samples: np.ndarray, confidence: float) -> list[list[float] | None]:
    """Per column of `samples` (resamples × values), its percentile interval; None for a column with no sample."""
    tail = 50 * (1 - confidence)
    out = []
    for col in samples.T:
        col = col[np.isfinite(col)]
        out.append([float(np.percentile(col, tail)), float(np.percentile(col, 100 - tail))] if len(col) else None)
    return out


def target_losses(front_a: dict, front_b: dict) -> tuple[list[float], bool]:
    """Losses to compare two families at: the ends and geometric middle of the overlap of the L* the two reach
    within their budgets (`lo`, `hi` in each front), or the gap's middle, flagged True (extrapolated)."""
    lo, hi = max(front_a["loss_lo"], front_b["loss_lo"]), min(front_a["loss_hi"], front_b["loss_hi"])
    if lo < hi:
        return [hi, math.sqrt(lo * hi), lo], False
    return [math.sqrt(lo * hi)], True


def compare_families(points_by_family: dict[str, list[dict]], reference: str, resamples: int = 1000,
                     seed: int = 0, floor: float = 0.0, confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """The compare.json document (module docstring): each family's frontier and, for every family but `reference`,
    its compute multiplier over `reference` with its bootstrap interval.

    points_by_family: each family's finished runs, dicts with flops (the budget), n_params (N of C = 6ND), n_tokens,
    loss. floor: the irreducible loss E the frontiers share (nats/token; 0: pure power laws).
    Raises ConfigError (LawFitError) when a family has fewer than two budgets with a minimum inside its sizes."""
    if reference not in points_by_family:
        raise ConfigError(f"reference family {reference!r} has no finished runs")
    fits = {}
    for name, points in points_by_family.items():
        try:
            law, rows = _kept(points)
        except LawFitError as e:
            raise LawFitError(f"family {name}: {e}", e.excluded) from None
        c = np.array([b["flops"] for b in law["budgets"]])
        loss = np.array([b["loss_opt"] for b in law["budgets"]])
        front = fit_frontier(c, loss, floor) | {"loss_lo": float(loss.min()), "loss_hi": float(loss.max()),
                                                "flops_lo": float(c.min()), "flops_hi": float(c.max())}
        fits[name] = {"law": law, "rows": rows, "front": front,
                      "optima": [{"flops": float(x), "loss_opt": float(y)} for x, y in zip(c, loss)],
                      "excluded_budgets": law["excluded_budgets"]}
    others = [n for n in fits if n != reference]
    targets = {n: target_losses(fits[reference]["front"], fits[n]["front"]) for n in others}

    rng = np.random.default_rng(seed)
    slopes = {n: [] for n in fits}
    mults = {n: [] for n in others}
    failed = 0
    for _ in range(resamples):
        fronts = {}
        try:
            for name, f in fits.items():
                iso = fit_isoflop(np.concatenate([resample_budget(r, rng) for r in f["rows"]]))
                fronts[name] = fit_frontier([b.flops for b in iso.budgets], [b.loss_opt for b in iso.budgets], floor)
        except ValueError:  # a parabola opening downwards (ConfigError), or L* at or below the floor
            failed += 1
            continue
        for name, front in fronts.items():
            slopes[name].append(front["slope"])
        for n in others:
            losses = targets[n][0]
            mults[n].append(compute_for_loss(fronts[reference], losses) / compute_for_loss(fronts[n], losses))

    families = {name: {"frontier": {k: f["front"][k] for k in ("k", "slope", "floor", "rms_residual_dex")},
                       "slope_interval": _percentiles(np.array(slopes[name]).reshape(-1, 1), confidence)[0]
                       if slopes[name] else None,
                       "optima": f["optima"], "excluded_budgets": f["excluded_budgets"],
                       "loss_range": [f["front"]["loss_lo"], f["front"]["loss_hi"]],
                       "flops_range": [f["front"]["flops_lo"], f["front"]["flops_hi"]],
                       "n_runs": len(points_by_family[name])}
                for name, f in fits.items()}
    comparisons = []
    for n in others:
        losses, extrapolated = targets[n]
        point = compute_for_loss(fits[reference]["front"], losses) / compute_for_loss(fits[n]["front"], losses)
        ints = _percentiles(np.array(mults[n]), confidence) if mults[n] else [None] * len(losses)
        comparisons.append({"family": n, "reference": reference, "extrapolated": extrapolated,
                            "at": [{"loss": float(L), "multiplier": float(m), "interval": iv,
                                    "flops_reference": float(compute_for_loss(fits[reference]["front"], L)),
                                    "flops_family": float(compute_for_loss(fits[n]["front"], L))}
                                   for L, m, iv in zip(losses, point, ints)]})
    return {"reference": reference, "families": families, "comparisons": comparisons,
            "counting": {"N": "active parameters (the N of C = 6ND; all of them for a dense model)",
                         "C": "6ND FLOPs with the family's own FLOPs per token",
                         "loss": "compute-optimal final eval loss per budget (parabola minimum), nats/token",
                         "multiplier": "C_reference(L) / C_family(L): > 1 when the family needs less compute"},
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": confidence, "failed": failed,
                          "method": "runs resampled with replacement within each budget of each family "
                                    "(at least 3 distinct sizes); percentile interval"}}


def reference_family(families: list[dict]) -> str:
    """The family the others are compared with: the first without model.moe (dense), else the first given."""
    return next((f["name"] for f in families if not f.get("moe")), families[0]["name"])


def write_compare(out: Path, doc: dict) -> None:
    """DIR/compare.json and compare.md of compare_families' `doc` (plot.py `plot_compare` draws compare.png)."""
    atomic_write_text(out / "compare.json", json.dumps(doc, indent=1) + "\n")
    (out / "compare.md").write_text(compare_markdown(doc))


def compare_markdown(doc: dict) -> str:
    """compare.md: the frontiers and the multipliers, in words and a table."""
    boot = doc["bootstrap"]
    pct = f"{100 * (1 - boot['confidence']) / 2:.0f}–{100 * (1 + boot['confidence']) / 2:.0f}%"
    floor = next(iter(doc["families"].values()))["frontier"]["floor"]
    lines = ["# Families compared at equal loss", "",
             f"Each family's compute-optimal loss per budget L*(C) (the minimum of its isoFLOP parabola), fitted as "
             f"L* = k · C^-slope{f' + {floor:g}' if floor else ''}; N counts active parameters and C = 6ND with each "
             "family's own FLOPs per token (llm/sweep/families.py). The multiplier is C_reference(L) / C_family(L): "
             "how many times the reference's compute the family saves at the same loss (> 1: the family is "
             f"cheaper). Intervals: {pct} percentile bootstrap, {boot['resamples']} resamples (seed {boot['seed']}) "
             f"of the runs within each budget of each family, {boot['failed']} discarded (a parabola opening "
             "downwards).", "", "## Frontiers", "",
             "| family | runs | budgets fitted | L* range | slope | interval | k | rms resid (dex) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in doc["families"].items():
        fr, iv = f["frontier"], f["slope_interval"]
        lines.append(f"| {name} | {f['n_runs']} | {len(f['optima'])} | {f['loss_range'][0]:.4f}–"
                     f"{f['loss_range'][1]:.4f} | {fr['slope']:.4f} | "
                     + (f"[{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "–")
                     + f" | {fr['k']:.4g} | {fr['rms_residual_dex']:.4f} |")
    for name, f in doc["families"].items():
        for e in f["excluded_budgets"]:
            lines.append(f"\n{name}: budget C={e['flops']:.3g} left out: {e['reason']}")
    lines += ["", "## Compute multiplier at equal loss", "",
              f"| family | reference | loss | C_reference | C_family | multiplier | {pct} interval |",
              "|---|---|---|---|---|---|---|"]
    for cmp in doc["comparisons"]:
        for row in cmp["at"]:
            iv = row["interval"]
            lines.append(f"| {cmp['family']} | {cmp['reference']} | {row['loss']:.4f} | {row['flops_reference']:.3g} "
                         f"| {row['flops_family']:.3g} | {row['multiplier']:.3f} | "
                         + (f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "–") + " |")
    lines += [f"\n{cmp['family']} and {cmp['reference']} reach no common loss within their budgets: the multiplier "
              "is at the middle of the gap, an extrapolation of both frontiers; add budgets so that their losses "
              "overlap." for cmp in doc["comparisons"] if cmp["extrapolated"]]
    lines += ["", "## Caveats", "",
              "A few budgets determine each frontier: its slope has few residuals to be judged by, and where "
              "the two slopes differ the multiplier changes with the loss (read it only at the losses listed). The "
              "multiplier holds for this data, tokenizer, these sizes and the batch and LR rule the sweep used for "
              "every family (tuned for dense models, DeepSeek LLM 2024); MoE routing settings (aux_loss_coef, top_k, "
              "granularity) move it. Compute counts 6 × active parameters: the router and the expert dispatch "
              "cost time that FLOPs do not show.", ""]
    return "\n".join(lines)
