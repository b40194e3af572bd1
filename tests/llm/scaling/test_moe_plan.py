"""The MoE plan: the law's optimum made a concrete shape, the budget kept, the dense plan beside it."""
import pytest

from llm.cost.flops import datasheet_peak_flops
from llm.scaling.moe_law import EXPANSION_RATE, KRAJEWSKI_2024_DENSE, compute_optimal_moe
from llm.scaling.moe_plan import budget_flops_per_token, format_moe_table, moe_shape, plan_moe, plan_moe_for_hours
from llm.scaling.plan import plan
from llm.shape import count_active_params, count_params, embedding_params, router_params

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("flops", [3e18, 1e20, 1e22])
def test_shape_follows_the_laws_optimum(flops):
    spec = plan_moe(flops)
    opt, cfg, moe = spec.optimum, spec.model, spec.model.moe
    assert spec.granularity == opt.granularity == compute_optimal_moe(flops).granularity
    assert (moe.experts, moe.top_k, moe.expert_d_ff * moe.top_k) == (EXPANSION_RATE * opt.granularity,
                                                                      opt.granularity, cfg.d_ff)
    assert cfg.moe_layers == cfg.n_layers  # the paper replaces every feed-forward
    active_non_embedding = count_active_params(cfg) - embedding_params(cfg)
    assert active_non_embedding == pytest.approx(opt.n_active, rel=0.15)  # the designer's width steps
    assert count_params(cfg, include_embeddings=False) == pytest.approx(opt.n_total, rel=0.15)
    assert (spec.n_params, spec.n_params_active) == (count_params(cfg), count_active_params(cfg))


def test_budget_holds_to_one_token():
    spec = plan_moe(1e20)
    per_token = 6 * spec.n_params_active + 8 * router_params(spec.model) * spec.model.n_layers
    assert spec.flops_per_token == budget_flops_per_token(spec.model) == per_token
    assert 0 <= 1e20 - spec.n_tokens * per_token < per_token


def test_dense_alternative_is_the_dense_plan_and_loses_like_for_like():
    spec = plan_moe(1e21)
    dense = plan(1e21)
    assert (spec.dense.n_params, spec.dense.n_tokens) == (dense.n_params, dense.n_tokens)
    assert spec.dense_loss_same_data == KRAJEWSKI_2024_DENSE.loss(dense.n_params_non_embedding, dense.n_tokens)
    assert spec.predicted_loss < spec.dense_loss_same_data  # the paper's finding, at this budget
    table = format_moe_table(spec)
    assert "dense alternative" in table and f"{spec.predicted_loss:.3f}" in table and "extrapolated" in table


def test_granularity_falls_back_to_one_that_divides_d_ff():
    cfg, gran = moe_shape(50e6, 2 ** 20)  # no d_ff is a multiple of 2^20
    assert 1 <= gran < 2 ** 20 and cfg.d_ff % (2 * gran) != 0 and cfg.d_ff % gran == 0 and cfg.moe.top_k == gran
    assert cfg.moe.expert_d_ff * gran == cfg.d_ff


def test_hours_buy_their_palm_flops():
    spec = plan_moe_for_hours(1000, "h100", 0.4)
    assert spec.flops_per_token_palm * spec.n_tokens == pytest.approx(1000 * 3600 * datasheet_peak_flops("h100")
                                                                      * 0.4, rel=1e-6)
    assert spec.to_json()["model"]["moe"]["experts"] == spec.model.moe.experts
