"""llm/sweep/compare.py in-process: isoFLOP runs drawn, with noise, from two known laws one of which is the other
given M times the compute; the comparison must find M inside its bootstrap interval (and 1 outside it when M is far
from 1), and write its report and picture."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llm.scaling.laws import ParametricLaw
from llm.sweep.compare import compare_families, compute_for_loss, fit_frontier, reference_family, write_compare
from llm.sweep.plot import plot_compare

pytestmark = pytest.mark.unit

# E = 0 and α = β, A = B: L*(C) is then exactly a power law in C (both terms scale as C^-αβ/(α+β)), and N_opt(C) =
# sqrt(C / 6), so a grid centred there has its minimum inside.
DENSE = ParametricLaw("dense", E=0.0, A=400.0, B=400.0, alpha=0.34, beta=0.34)
BUDGETS = (1e15, 1e16, 1e17, 1e18)


def _runs(multiplier: float, noise: float, rng: np.random.Generator, sizes: int = 5) -> list[dict]:
    """A family whose loss at (N, D) is the dense law's at (sN, sD), s = sqrt(multiplier): at every N and D it reaches
    the loss the dense law reaches with `multiplier` times the compute 6ND. Losses times 1 + noise·N(0, 1)."""
    s = math.sqrt(multiplier)
    runs = []
    for c in BUDGETS:
        for t in np.linspace(-0.5, 0.5, sizes):
            n = round(math.sqrt(c / 6) * 10 ** t)
            d = c / (6 * n)
            loss = DENSE.loss(s * n, s * d) * (1 + noise * rng.standard_normal())
            runs.append({"name": f"c{c:.0e}_n{n}", "flops": c, "n_params": n, "n_tokens": d, "loss": loss})
    return runs


@pytest.mark.parametrize("multiplier", [2.5, 1.0])
def test_a_known_compute_multiplier_is_recovered_within_its_interval(multiplier):
    rng = np.random.default_rng(1)
    doc = compare_families({"dense": _runs(1.0, 0.004, rng), "moe8": _runs(multiplier, 0.004, rng)}, "dense",
                           resamples=1000, seed=0)
    (cmp,) = doc["comparisons"]
    assert cmp["family"] == "moe8" and not cmp["extrapolated"] and len(cmp["at"]) == 3
    for row in cmp["at"]:
        lo, hi = row["interval"]
        assert lo <= multiplier <= hi, row
        assert lo <= row["multiplier"] <= hi and hi / lo < 1.6  # an interval that says something
        assert abs(math.log(row["multiplier"] / multiplier)) < math.log(1.1)
        if multiplier > 2:
            assert lo > 1  # and it tells the families apart
    slope = DENSE.alpha * DENSE.beta / (DENSE.alpha + DENSE.beta)  # the true frontier's exponent
    for fam in doc["families"].values():  # the parabolas' vertices sit a little above the true minima: not exact
        assert fam["frontier"]["slope"] == pytest.approx(slope, abs=0.003)
    assert doc["bootstrap"]["resamples"] == 1000 and doc["bootstrap"]["failed"] < 50


def test_the_bootstrap_is_repeatable_with_its_seed():
    runs = {"dense": _runs(1.0, 0.01, np.random.default_rng(2)), "moe": _runs(2.0, 0.01, np.random.default_rng(3))}
    a, b = (compare_families(runs, "dense", resamples=50, seed=7) for _ in range(2))
    assert a == b
    assert compare_families(runs, "dense", resamples=50, seed=8) != a


def test_a_frontier_inverts_to_the_compute_of_a_loss():
    c = np.array([1e15, 1e16, 1e17])
    front = fit_frontier(c, 3.0 * c ** -0.05 + 1.0, floor=1.0)
    assert front["slope"] == pytest.approx(0.05) and front["k"] == pytest.approx(3.0)
    assert compute_for_loss(front, 3.0 * 1e16 ** -0.05 + 1.0) == pytest.approx(1e16)
    assert math.isnan(compute_for_loss(front, 0.9))  # at or below the floor: never reached


def test_the_reference_is_the_dense_family():
    assert reference_family([{"name": "moe8", "moe": {"experts": 8}}, {"name": "dense", "moe": None}]) == "dense"
    assert reference_family([{"name": "a", "moe": {"experts": 8}}, {"name": "b", "moe": {"experts": 4}}]) == "a"


def test_the_comparison_is_written_and_drawn(tmp_path):
    rng = np.random.default_rng(4)
    doc = compare_families({"dense": _runs(1.0, 0.004, rng), "moe8": _runs(2.0, 0.004, rng)}, "dense",
                           resamples=100, seed=0)
    write_compare(tmp_path, doc)
    plot_compare(doc, tmp_path / "compare.png")
    assert json.loads((tmp_path / "compare.json").read_text()) == doc
    md = (tmp_path / "compare.md").read_text()
    assert "| moe8 | dense |" in md and "5–95% interval" in md
    assert (tmp_path / "compare.png").stat().st_size > 10_000
