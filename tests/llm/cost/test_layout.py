"""Layout rules and the search: never an impossible layout, never one DeepSpeed refuses; step time by hand."""
import pytest

from llm.config import ConfigError, ModelConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig
from llm.cost.flops import datasheet_peak_flops, flops_per_token
from llm.cost.layout import Layout, layout_errors
from llm.cost.layout_search import choose_layout, enumerate_layouts, evaluate, rank_layouts
from llm.cost.step_time import NETWORKS, step_time
from parallel.ds_config import deepspeed_config
from parallel.topology import check_layout

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CFG = ModelConfig(n_layers=8, d_model=256, n_heads=8, n_kv_heads=4, d_ff=704, vocab_size=4096, seq_len=256)


def run_config(cfg, layout, gbs):
    parallel = ParallelConfig(**layout.parallel_dict())
    return RunConfig(model=cfg, train=TrainConfig(max_steps=1, global_batch_size=gbs,
                                                  micro_batch_size=layout.micro_batch_size),
                     parallel=parallel, precision=PrecisionConfig(dtype="bf16"))


@pytest.mark.parametrize("world,gbs", [(4, 16), (8, 32), (16, 24), (6, 12)])
def test_every_accepted_layout_is_one_deepspeed_accepts(world, gbs):
    ranked = rank_layouts(CFG, world, gbs, "h100", 80e9, gpus_per_node=8)
    accepted = [c for c in ranked if c.memory is not None]
    assert accepted
    for c in ranked:
        cfg = run_config(CFG, c.layout, gbs)
        if c.memory is None:  # rejected by a rule: check_layout or ParallelConfig must agree, or it is ours
            if "unequal stages" in c.rejected or "spans nodes" in c.rejected:
                continue
            with pytest.raises(ConfigError):
                cfg.parallel.validate()
                check_layout(cfg, world)
            continue
        cfg.parallel.validate()
        assert check_layout(cfg, world) == (c.layout.tp, c.layout.pp, c.layout.dp)
        ds = deepspeed_config(cfg, c.layout.dp)
        assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * \
            ds["gradient_accumulation_steps"] * c.layout.dp


def test_rules_named():
    errors = layout_errors(CFG, Layout(3, 2, 1, 2, 3), 16)
    text = "; ".join(errors)
    assert "parallel.tensor=3 does not divide model.n_heads=8" in text
    assert "ZeRO stage 0 or 1 only" in text
    assert "global_batch_size=16 is not a multiple" in text
    assert "does not divide model.n_layers" in evaluate(CFG, Layout(1, 3, 1, 0, 1), 3, "h100", 80e9).rejected


def test_what_does_not_fit_is_rejected_with_its_size():
    c = evaluate(CFG, Layout(1, 1, 4, 0, 4), 16, "h100", 1e6, framework_bytes=0, fragmentation=0.0)
    assert c.rejected.startswith("needs ") and "GB > 0.0 GB" in c.rejected
    with pytest.raises(ValueError, match="no layout of 4 GPUs fits"):
        choose_layout(CFG, 4, 16, "h100", 1e6)


def test_offload_only_when_nothing_else_fits():
    big = ModelConfig(n_layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab_size=32000, seq_len=2048)
    assert not any(c.layout.offload_optimizer for c in rank_layouts(big, 8, 64, "h100", 80e9))
    chosen = choose_layout(big, 1, 8, "h100", 80e9)  # 7B on one 80 GB GPU: only with the optimizer on the CPU
    assert chosen.layout.offload_optimizer and chosen.layout.zero_stage >= 1


def test_step_time_by_hand():
    lay = Layout(tp=2, pp=2, dp=2, zero_stage=1, micro_batch_size=1)
    gbs, mfu = 16, 0.5
    st = step_time(CFG, lay, gbs, "h100", gpus_per_node=8, mfu=mfu)
    m = gbs // (1 * 2)
    flops = flops_per_token(CFG) * gbs * 256 / 8
    assert st.bubble_fraction == pytest.approx(1 / (m + 1))
    assert st.compute_s == pytest.approx(flops / (datasheet_peak_flops("h100") * mfu) * (m + 1) / m)
    net = NETWORKS["h100-sxm"]
    act = 2 * 256 * 256
    assert st.tp_comm_s == pytest.approx(4 * 4 * m * 2 * (1 / 2) * act / net.intra_node)  # 4 blocks per stage
    assert st.pp_comm_s == pytest.approx(2 * m * act / 2 / net.intra_node)
    assert st.total_s == pytest.approx(st.compute_s + st.tp_comm_s + st.pp_comm_s + st.dp_comm_s)


def test_recomputation_costs_a_forward():
    plain = step_time(CFG, Layout(1, 1, 1, 0, 4), 16, "h100", mfu=0.5)
    full = step_time(CFG, Layout(1, 1, 1, 0, 4, 1), 16, "h100", mfu=0.5)
    assert 1.2 < full.compute_s / plain.compute_s < 1.34  # blocks are most, not all, of the FLOPs: < 4/3


def test_enumeration_covers_the_grid():
    lays = enumerate_layouts(CFG, 8, 8, 32)
    assert {(x.tp, x.pp) for x in lays} == {(t, p) for t in (1, 2, 4, 8) for p in (1, 2, 4, 8) if t * p <= 8}
    assert {x.recompute_every_k for x in lays} == {0, 1, 2} and {x.zero_stage for x in lays} == {0, 1, 2, 3}
