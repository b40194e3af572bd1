"""Active FLOPs per token of mixture-of-experts models, against torch's own count of a training step."""
import pytest

from llm.config import ModelConfig
from llm.config.model import MoEConfig
from llm.cost.flops import block_flops_per_token, flops_per_token, hfu_flops_per_token, layer_flops_per_token, mfu
from llm.shape import count_active_params, count_matmul_params
from tests.llm.cost.test_flops import measured_matmul_flops

pytestmark = pytest.mark.unit


def _moe(**moe) -> ModelConfig:
    return ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, vocab_size=128, seq_len=32,
                       moe=MoEConfig(**moe))


@pytest.mark.parametrize("moe", [dict(experts=4, top_k=2), dict(experts=8, top_k=1, expert_d_ff=48, shared_experts=1),
                                 dict(experts=4, top_k=3, every_k_layers=2)])
def test_active_matmul_flops_match_torch_counter(moe):
    # 6·N_active per token against torch's count: the experts' matmuls see tokens·top_k rows in all, the router all
    # tokens; the dispatch (argsort, gather) and combine (index_add) are no matmuls.
    pytest.importorskip("torch")
    cfg = _moe(**moe)
    assert measured_matmul_flops(cfg) == 6 * count_matmul_params(cfg) * 2 * cfg.seq_len


def test_moe_flops_are_active_not_total():
    cfg = _moe(experts=8, top_k=2)
    dense = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, vocab_size=128, seq_len=32, d_ff=2 * cfg.d_ff)
    # Two experts of width d_ff cost what one dense SwiGLU of width 2·d_ff costs, plus the router's 6·d·E per block.
    assert flops_per_token(cfg, "palm") == flops_per_token(dense, "palm") + 6 * 2 * 64 * 8
    assert flops_per_token(cfg, "6N") == 6 * count_active_params(cfg)
    assert mfu(1000.0, cfg, 1e12) == 1000.0 * flops_per_token(cfg, "palm") / 1e12


def test_hfu_recomputes_moe_blocks_at_their_cost():
    cfg = _moe(experts=4, top_k=2)
    block = block_flops_per_token(cfg, 0)
    assert block > layer_flops_per_token(cfg)  # top-2 of d_ff-wide experts: twice the dense MLP, plus the router
    assert hfu_flops_per_token(cfg, 2) == pytest.approx(flops_per_token(cfg, "palm") + 2 * block / 3)
    # The blocks' PaLM counts and the output projection's 6·V·d add up to the model's.
    assert sum(block_flops_per_token(cfg, i) for i in range(2)) + 6 * 128 * 64 == flops_per_token(cfg, "palm")
