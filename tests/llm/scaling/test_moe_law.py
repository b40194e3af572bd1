"""Krajewski et al. 2024's fine-grained MoE law: its compute model and optimum against the paper's own table."""
import pytest

from llm.scaling.moe_law import (KRAJEWSKI_2024_DENSE, KRAJEWSKI_2024_MOE, compute_optimal_moe,
                                 krajewski_flops_per_token)

pytestmark = pytest.mark.unit

# arXiv:2402.07871 §6, the compute-optimal configurations at E = 64: (N_active, G, D, FLOPs).
PAPER_OPTIMA = [(100e6, 8, 4.37e9, 2.95e18), (1e9, 16, 28.94e9, 1.93e20), (7e9, 32, 137.60e9, 6.46e21),
                (1e12, 64, 7.94e12, 4.97e25)]


@pytest.mark.parametrize("n_active,gran,tokens,flops", PAPER_OPTIMA)
def test_compute_model_reproduces_the_papers_flops(n_active, gran, tokens, flops):
    assert krajewski_flops_per_token(n_active, gran) * tokens == pytest.approx(flops, rel=0.003)


@pytest.mark.parametrize("n_active,gran,tokens,flops", PAPER_OPTIMA)
def test_optimum_lands_on_the_papers_granularity_and_size(n_active, gran, tokens, flops):
    opt = compute_optimal_moe(flops)
    assert opt.granularity == gran
    assert opt.n_active == pytest.approx(n_active, rel=0.05)
    assert opt.n_tokens == pytest.approx(tokens, rel=0.05)


def test_paper_losses():
    # The predicted losses the paper prints (as quoted by its summary) for 64x7B, 2.076, and 64x1T, 1.367.
    assert compute_optimal_moe(6.46e21).loss == pytest.approx(2.076, abs=0.03)
    assert compute_optimal_moe(4.97e25).loss == pytest.approx(1.367, abs=0.03)


def test_granularity_helps_and_dense_is_worse_at_equal_n_and_d():
    law = KRAJEWSKI_2024_MOE
    assert law.loss(1e9, 1e10, 8) < law.loss(1e9, 1e10, 1)
    assert KRAJEWSKI_2024_DENSE.loss(1e9, 1e10) == pytest.approx(0.47 + 16.3 / 1e9 ** 0.126 + 26.7 / 1e10 ** 0.127)


def test_larger_budgets_choose_finer_experts():
    grans = [compute_optimal_moe(c).granularity for c in (1e18, 1e20, 1e22, 1e24)]
    assert grans == sorted(grans) and grans[0] < grans[-1]
