"""llm/scaling/grid.py (the isoFLOP grid), llm/scaling/law_fit.py and law.py (fitting, law.json, the law plan()
uses): pure Python."""
import json
import math

import numpy as np
import pytest

from llm.scaling.law import LawFileError, SweepLaw, read_law, write_law
from llm.scaling.law_fit import fit_law
from llm.scaling.plan import DEEPSEEK_2024_LR, plan
from llm.scaling.laws import BESIROGLU_2024, ParametricLaw, compute_optimal
from llm.shape import SMALL, count_params
from llm.scaling.grid import design_grid, smallest_shape_params

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_grid_is_log_spaced_around_the_laws_optimum_with_d_from_c_over_6n():
    budgets = [1e18, 1e19]
    grid = design_grid(budgets, 5, BESIROGLU_2024, vocab_size=32000, seq_len=2048, spread_dex=0.5)
    assert not grid.notes  # nothing below the smallest shape at these budgets
    for b, c in enumerate(budgets):
        pts = [p for p in grid.points if p.budget_index == b]
        n_opt, _ = compute_optimal(c, BESIROGLU_2024)
        offsets = [math.log10(p.n_params_target / n_opt) for p in pts]
        assert offsets == pytest.approx([-0.5, -0.25, 0.0, 0.25, 0.5])
        for p in pts:
            assert count_params(p.model) == p.n_params
            assert abs(math.log(p.n_params / p.n_params_target)) < math.log(1.15)  # the designer's tolerance
            assert 6 * p.n_params * p.n_tokens <= c < 6 * p.n_params * (p.n_tokens + 1)  # D = C / 6N
            assert p.spec.lr == pytest.approx(DEEPSEEK_2024_LR[0] * c ** DEEPSEEK_2024_LR[1])  # plan.py's rule
            assert p.spec.total_steps * p.spec.global_batch_size * 2048 >= p.n_tokens
        assert [p.n_params for p in pts] == sorted(p.n_params for p in pts)
    assert len({p.name for p in grid.points}) == len(grid.points)


def test_budget_below_the_smallest_shape_shifts_the_grid_and_says_so():
    floor = smallest_shape_params(4096, 256)
    assert floor == count_params(design_grid([1e12, 3e12], 3, BESIROGLU_2024, 4096, 256).points[0].model)
    grid = design_grid([1e12, 3e12], 3, BESIROGLU_2024, 4096, 256, spread_dex=0.3)
    assert len(grid.notes) == 2 and "shifted up" in grid.notes[0] and f"{floor:,}" in grid.notes[0]
    for b in (0, 1):
        pts = [p for p in grid.points if p.budget_index == b]
        assert pts[0].n_params == floor  # the shifted grid starts at the smallest shape, spacing kept
        assert math.log10(pts[-1].n_params_target / pts[0].n_params_target) == pytest.approx(0.6)


def test_small_shape_rules_put_a_cpu_budget_around_the_laws_optimum():
    """With SMALL shapes and a 512-piece vocabulary, 1e13 FLOPs needs no shift: its sizes sit around N_opt."""
    assert smallest_shape_params(512, 128, rules=SMALL) < smallest_shape_params(512, 128) / 2
    grid = design_grid([3e12, 1e13], 5, BESIROGLU_2024, 512, 128, spread_dex=0.5, rules=SMALL)
    assert not any("C=1e+13" in note for note in grid.notes)
    pts = [p for p in grid.points if p.flops == 1e13]
    n_opt = compute_optimal(1e13, BESIROGLU_2024)[0]
    assert len(pts) == 5 and pts[0].n_params < n_opt < pts[-1].n_params
    assert all(p.model.head_dim == 32 and p.spec.total_steps >= 4 for p in grid.points)


@pytest.mark.parametrize("budgets, sizes, message", [
    ([1e10, 3e10], 3, "optimizer steps"),       # the largest point gets less than MIN_STEPS steps
    ([1e12, 1.05e12], 3, "within 10%"),
    ([1e12], 3, "at least two"),
    ([1e12, 3e12], 2, "at least 3 sizes"),
    ([1e12, -3e12], 3, "positive"),
])
def test_bad_budgets_are_refused_with_one_line(budgets, sizes, message):
    with pytest.raises(ValueError, match=message) as e:
        design_grid(budgets, sizes, BESIROGLU_2024, 4096, 256)
    assert "\n" not in str(e.value)


KNOWN = ParametricLaw("known", E=1.5, A=500.0, B=100.0, alpha=0.35, beta=0.35)  # a = b = 0.5, N_opt ≈ 10·sqrt(C/6)


def _runs(budgets, sizes_dex=(-0.6, -0.3, 0.0, 0.3, 0.6), noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for c in budgets:
        n_opt, _ = KNOWN.optimal(c)
        for t in sizes_dex:
            n = n_opt * 10 ** t
            d = c / (6 * n)
            out.append({"name": f"{c:g}_{t}", "flops": c, "n_params": n, "n_tokens": d,
                        "loss": KNOWN.loss(n, d) * (1 + noise * rng.standard_normal())})
    return out


@pytest.fixture(scope="module")
def fitted():
    """One fit with the parametric step (the slow part: L-BFGS from 16 starts), shared by the tests below."""
    runs = _runs([1e15, 1e16, 1e17])
    return runs, fit_law(runs, resamples=200, seed=0)


def test_fit_law_recovers_a_known_law_with_intervals_and_a_parametric_fit(fitted):
    runs, doc = fitted
    a, b = doc["n_opt"], doc["d_opt"]
    assert a["a"] == pytest.approx(KNOWN.a, abs=0.05) and b["b"] == pytest.approx(1 - a["a"], abs=1e-9)
    assert a["a_interval"][0] <= a["a"] <= a["a_interval"][1] and a["a_interval"][1] > a["a_interval"][0]
    for bud in doc["budgets"]:
        lo, hi = bud["n_opt_interval"]
        assert lo <= bud["n_opt"] <= hi and bud["vertex_inside"]
        assert bud["n_opt"] == pytest.approx(KNOWN.optimal(bud["flops"])[0], rel=0.3)
    par = doc["parametric"]  # 15 runs: enough for the 5-constant fit, with a residual per run
    assert len(par["residuals"]) == 15 and par["rms_residual"] < 0.01
    assert par["a"] == pytest.approx(KNOWN.a, abs=0.05)
    # Seeded: the same seed gives the same intervals, another seed other resamples.
    assert fit_law(runs, resamples=200, seed=0, parametric=False)["n_opt"]["a_interval"] == a["a_interval"]
    assert fit_law(runs, resamples=200, seed=1, parametric=False)["bootstrap"]["samples"] != doc["bootstrap"]["samples"]


def test_a_budget_without_an_interior_minimum_is_excluded_with_its_reason():
    runs = _runs([1e15, 1e16]) + _runs([1e17], sizes_dex=(0.6, 0.9, 1.2))  # all right of the optimum: rising
    for r in runs[-3:]:
        r["loss"] = 5.0 - 0.4 * (math.log10(r["n_params"]) - 8) ** 2  # opens downwards
    doc = fit_law(runs, resamples=20, parametric=False)
    assert [b["flops"] for b in doc["budgets"]] == [1e15, 1e16]
    assert doc["excluded_budgets"][0]["flops"] == 1e17 and "opens downwards" in doc["excluded_budgets"][0]["reason"]
    with pytest.raises(ValueError, match="need two budgets whose parabola has its minimum inside"):
        fit_law(runs[5:], resamples=20, parametric=False)


def test_law_file_round_trip_is_a_law_plan_uses(tmp_path, fitted):
    _, doc = fitted
    write_law(tmp_path / "law.json", doc)
    law = read_law(tmp_path / "law.json")
    assert isinstance(law, SweepLaw) and law.a == pytest.approx(doc["n_opt"]["a"])
    c = 1e18
    assert law.optimal(c)[0] == pytest.approx(doc["n_opt"]["k"] * c ** doc["n_opt"]["a"])
    lo, hi = law.n_opt_interval(c)
    assert lo < law.optimal(c)[0] < hi
    assert "extrapolated 10x" in law.describe(c) and "bootstrap" in law.describe(c)
    spec = plan(c, approach=law, vocab_size=32000, seq_len=2048)
    assert spec.law == law.name and spec.loss_law == "sweep-parametric"
    assert spec.n_params_target == pytest.approx(law.optimal(c)[0])
    assert spec.predicted_loss == pytest.approx(law.loss_law.loss(spec.n_params, spec.n_tokens))
    from llm.scaling.plan_output import format_table
    assert "sweep-parametric, the sweep's own data" in format_table(spec)  # not Chinchilla's MassiveText
    assert law.shapes == "standard"  # a law.json without the sweep's shape rules (written before --shapes)


def test_a_small_shapes_law_plans_small_shapes(tmp_path, fitted):
    """The law records the sweep's shape rules; planned under them, the shape, table and config header say so."""
    from llm.scaling.plan_output import config_header, format_table
    from llm.shape import SHAPE_RULES
    _, doc = fitted
    write_law(tmp_path / "law.json", {**doc, "sweep": {"shapes": "small"}})
    law = read_law(tmp_path / "law.json")
    assert law.shapes == "small"
    spec = plan(1e14, approach=law, vocab_size=512, seq_len=128, tp_degrees=(1,), shapes=SHAPE_RULES[law.shapes])
    assert spec.shape_rules == "small" and spec.model.head_dim == 32
    assert "(small shape rules)" in format_table(spec)
    assert "small rules" in config_header(spec) and "head_dim 32 (fixed by the small rules)" in config_header(spec)
    standard = plan(1e14, approach=law, vocab_size=512, seq_len=128, tp_degrees=(1,))
    assert standard.shape_rules == "standard" and standard.model.head_dim == 64
    assert "shape rules" not in format_table(standard)
    write_law(tmp_path / "law.json", {**doc, "sweep": {"shapes": "tiny"}})
    with pytest.raises(LawFileError, match="unknown shape rules 'tiny'"):
        read_law(tmp_path / "law.json")


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), ("{not json", "not JSON"), (json.dumps({"a": 1}), "not a sweep law"),
    (json.dumps({"format": "llm-forge isoflop law v1"}), "n_opt.a is missing"),
])
def test_bad_law_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "law.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LawFileError, match=message) as e:
        read_law(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# The 20 runs of `bench/bench_sweep.py --budgets 1e12 3e12 --seeds 2` (C, N, tokens trained, final eval loss): the
# parametric fit's optimum ran off to α ≈ 65, where N^α overflows a float, and the sweep died with a traceback;
# with the losses rounded as here it stops at α ≈ 51, finite, and plan.py would have predicted losses with it.
TWO_BUDGET_SEED_RUNS = [
    (1e12, 46176, 3610624, 2.813), (1e12, 46176, 3610624, 2.8214), (1e12, 72928, 2285568, 2.718),
    (1e12, 72928, 2285568, 2.7276), (1e12, 172352, 968704, 3.2043), (1e12, 172352, 968704, 2.9165),
    (1e12, 279104, 598016, 3.4514), (1e12, 279104, 598016, 3.5667), (1e12, 430752, 387072, 4.0474),
    (1e12, 430752, 387072, 4.2472), (3e12, 46176, 10829824, 2.7309), (3e12, 46176, 10829824, 2.725),
    (3e12, 72928, 6856704, 2.5607), (3e12, 72928, 6856704, 2.5445), (3e12, 172352, 2904064, 2.6799),
    (3e12, 172352, 2904064, 2.9056), (3e12, 279104, 1794048, 2.6315), (3e12, 279104, 1794048, 2.5973),
    (3e12, 430752, 1163264, 3.441), (3e12, 430752, 1163264, 3.3099)]


def test_a_diverging_parametric_fit_is_reported_not_raised():
    runs = [{"flops": c, "n_params": n, "n_tokens": int(c // (6 * n)), "tokens_trained": d, "loss": loss}
            for c, n, d, loss in TWO_BUDGET_SEED_RUNS]
    doc = fit_law(runs, resamples=50)
    par = doc["parametric"]
    assert "E" not in par and "diverged" in par["skipped"] and "20 runs on 2 budgets" in par["skipped"], par
    assert len(doc["budgets"]) == 2 and math.isfinite(doc["n_opt"]["a"])  # the parabolas' law stands
