"""Memory and step time of mixture-of-experts layouts: expert sharding, ZeRO over the expert-data-parallel group,
top_k activations, the all-to-all item, and the layout rules AutoEP imposes."""
import pytest

from llm.config import ConfigError, ModelConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig
from llm.config.model import MoEConfig
from llm.cost.activations import block_bytes_per_token, moe_mlp_bytes_per_token
from llm.cost.cluster import format_cluster, plan_cluster
from llm.cost.layout import Layout, layout_errors
from llm.cost.layout_search import rank_layouts
from llm.cost.memory import expert_params_per_rank, memory_per_gpu
from llm.cost.step_time import NETWORKS, all_to_all_bytes_per_step, step_time
from llm.shape import count_params, expert_params

pytestmark = pytest.mark.unit

MOE = ModelConfig(n_layers=4, d_model=128, n_heads=4, d_ff=384, vocab_size=1024, seq_len=32,
                  moe=MoEConfig(experts=8, top_k=2, expert_d_ff=96, shared_experts=1, every_k_layers=2))
ROUTED = 2 * 8 * 3 * 128 * 96  # two MoE layers of eight experts


def predict(layout, gbs=8, cfg=MOE, **kw):
    return memory_per_gpu(cfg, layout, gbs, framework_bytes=0, fragmentation=0.0, **kw)


def test_every_parameter_is_held_once_without_sharding():
    m = predict(Layout(1, 1, 1, 0, 2))
    assert expert_params_per_rank(MOE, 1) == ROUTED
    assert m.params + m.experts // 8 == 2 * count_params(MOE)  # experts: 16 bytes each (2 + 2 + 12)
    assert m.params + m.grads + m.optimizer + m.experts == 16 * count_params(MOE)
    assert m.as_dict()["experts"] == m.experts == 16 * ROUTED


@pytest.mark.parametrize("zero,expected,expected_ep1", [(0, 16, 16), (1, 4 + 12 / 2, 4 + 12 / 4),
                                                        (2, 2 + 14 / 2, 2 + 14 / 4), (3, 16 / 2, 16 / 4)])
def test_experts_split_over_ep_and_zero_over_dp_over_ep(zero, expected, expected_ep1):
    # dp = 4, ep = 2: each rank holds 4 of the 8 experts, sharded over the dp/ep = 2 ranks that hold the same 4.
    m = predict(Layout(1, 1, 4, zero, 1, ep=2), reduce_bucket_size=0)
    assert m.experts == round(expected * ROUTED / 2)
    dense_part = predict(Layout(1, 1, 4, zero, 1), reduce_bucket_size=0)  # ep=1: same non-expert states
    assert (m.params, m.grads, m.optimizer) == (dense_part.params, dense_part.grads, dense_part.optimizer)
    assert dense_part.experts == round(expected_ep1 * ROUTED)  # all 8 experts, ZeRO over all 4 ranks


def test_moe_activations_pass_each_token_through_top_k_experts():
    e = 2  # the count itself is checked against autograd in test_activations_moe.py
    # A dense block keeps its SwiGLU's 4·e·d_ff instead; attention and norms are the same.
    assert block_bytes_per_token(MOE, layer=1) - block_bytes_per_token(MOE, layer=0) == \
        moe_mlp_bytes_per_token(MOE) - 4 * e * MOE.d_ff
    m = predict(Layout(1, 1, 1, 0, 2))
    blocks = sum(block_bytes_per_token(MOE, layer=i) for i in range(4)) * 2 * 32
    assert m.activations == round(blocks + 8 * 2 * 32)  # and the token ids


def test_layout_rules_are_autoeps():
    assert layout_errors(MOE, Layout(1, 1, 4, 0, 1, ep=3), 8)  # 3 divides neither 8 experts nor dp=4
    assert any("parallel.tensor" in e for e in layout_errors(MOE, Layout(2, 1, 2, 0, 1), 8))
    assert any("parallel.pipeline" in e for e in layout_errors(MOE, Layout(1, 2, 2, 0, 1), 8))
    dense = ModelConfig(n_layers=2, d_model=64, n_heads=4)
    assert any("needs a mixture-of-experts" in e for e in layout_errors(dense, Layout(1, 1, 2, 0, 1, ep=2), 8))
    assert not layout_errors(MOE, Layout(1, 1, 4, 1, 1, ep=4), 8)


def test_every_accepted_moe_layout_is_one_the_real_checks_accept():
    from parallel.topology import check_layout
    for c in rank_layouts(MOE, 8, 16, "h100", 80e9):
        parallel = ParallelConfig(**c.layout.parallel_dict())
        cfg = RunConfig(model=MOE, train=TrainConfig(max_steps=1, global_batch_size=16,
                                                     micro_batch_size=c.layout.micro_batch_size),
                        parallel=parallel, precision=PrecisionConfig(dtype="bf16"))
        if c.memory is None:
            if "unequal stages" in c.rejected or "spans nodes" in c.rejected:
                continue
            with pytest.raises(ConfigError):
                cfg.parallel.validate()
                check_layout(cfg, 8)
            continue
        cfg.parallel.validate()
        assert check_layout(cfg, 8) == (1, 1, 8) and parallel.expert == c.layout.ep


def test_all_to_all_by_hand():
    layout = Layout(1, 1, 8, 1, 2, ep=4)
    m = 32 // (2 * 8)
    expected = 4 * 2 * m * (2 * 2 * 32 * 2 * 128) * 3 / 4  # 4 per MoE layer, 2 layers, m micro-batches, (ep-1)/ep
    assert all_to_all_bytes_per_step(MOE, layout, 32) == expected
    t = step_time(MOE, layout, 32, "h100", mfu=0.4)
    assert t.ep_comm_s == expected / NETWORKS["h100-sxm"].intra_node
    assert t.total_s == pytest.approx(t.compute_s + t.dp_comm_s + t.ep_comm_s)
    assert step_time(MOE, Layout(1, 1, 8, 1, 2), 32, "h100", mfu=0.4).ep_comm_s == 0.0
    # Recomputing every block adds a forward's 2 all-to-alls per MoE layer.
    assert all_to_all_bytes_per_step(MOE, Layout(1, 1, 8, 1, 2, 1, ep=4), 32, recomputed=4) == expected * 6 / 4
    # An expert group wider than a node crosses the slower links.
    wide = step_time(MOE, Layout(1, 1, 16, 1, 1, ep=8), 32, "h100", gpus_per_node=4, mfu=0.4)
    assert wide.ep_comm_s == all_to_all_bytes_per_step(MOE, Layout(1, 1, 16, 1, 1, ep=8), 32) / \
        NETWORKS["h100-sxm"].inter_node


def test_planner_itemises_experts():
    big = ModelConfig(n_layers=8, d_model=1024, n_heads=8, seq_len=512, vocab_size=32000,
                      moe=MoEConfig(experts=64, top_k=8, expert_d_ff=512))
    assert expert_params(big) * 64 * 8 > 0.8 * count_params(big)  # the experts are most of the model
    plan = plan_cluster(big, 10 ** 9, 64, 8, "h100")
    assert plan.chosen.memory.experts > 0
    text = format_cluster(plan)
    assert "experts" in text and ("EP all-to-all" in text) == (plan.chosen.layout.ep > 1)
