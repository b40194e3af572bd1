"""Layout rules and the search: never an impossible layout, never one DeepSpeed refuses; step time by hand."""
import dataclasses
import inspect

import pytest

from llm.config import ConfigError, ModelConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig
from llm.config.parallel import context_layout_errors
from llm.cost.flops import datasheet_peak_flops, flops_per_token
from llm.cost.layout import Layout, layout_errors
from llm.cost.layout_search import choose_layout, enumerate_layouts, evaluate, rank_layouts
from llm.cost.step_time import NETWORKS, step_time
from parallel.ds_config import deepspeed_config
from parallel import topology
from parallel.topology import check_layout

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CFG = ModelConfig(n_layers=8, d_model=256, n_heads=8, n_kv_heads=4, d_ff=704, vocab_size=4096, seq_len=256)


def run_config(cfg, layout, gbs):
    parallel = ParallelConfig(**layout.parallel_dict())
    return RunConfig(model=cfg, train=TrainConfig(max_steps=1, global_batch_size=gbs,
                                                  micro_batch_size=layout.micro_batch_size),
                     parallel=parallel, precision=PrecisionConfig(dtype="bf16"))


# Issue 24: parallel/topology.py takes parallel.context out of the world itself (dp = world / (tp·pp·C)) once it
# asks context_layout_errors; until then a context-parallel layout is checked as the world of one context slice.
TOPOLOGY_KNOWS_CONTEXT = "context_layout_errors" in inspect.getsource(topology)


def launcher_layout(cfg, world, context):
    """check_layout's (tp, pp, dp) of a planned layout."""
    return check_layout(cfg, world if TOPOLOGY_KNOWS_CONTEXT else world // context)


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
        assert launcher_layout(cfg, world, c.layout.context) == (c.layout.tp, c.layout.pp, c.layout.dp)
        assert not context_layout_errors(cfg.model, c.layout.context, c.layout.tp, c.layout.pp)
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


def test_context_rules_are_one_line_each():
    from llm.config.model import MoEConfig
    long = ModelConfig(n_layers=8, d_model=256, n_heads=8, n_kv_heads=4, d_ff=704, vocab_size=4096, seq_len=4096)
    assert context_layout_errors(long, 1, 8, 4) == [] and context_layout_errors(long, 4, 1, 1) == []
    assert context_layout_errors(long, 0, 1, 1) == ["parallel.context=0 must be >= 1"]
    (seq,) = context_layout_errors(dataclasses.replace(long, seq_len=4000), 3, 1, 1)[:1]
    assert seq.startswith("parallel.context=3 does not divide model.seq_len=4000")
    heads = context_layout_errors(long, 4, 2, 1)  # 4 query heads per TP rank are fine, 2 key/value heads are not
    assert heads == ["parallel.context=4 does not divide the 2 heads per tensor-parallel rank (model.n_kv_heads=4 / "
                     "parallel.tensor=2): Ulysses gives each rank whole heads"]
    (pipe,) = context_layout_errors(long, 2, 1, 2)
    assert "parallel.pipeline=2" in pipe and "sequence-parallel group" in pipe
    moe = dataclasses.replace(long, moe=MoEConfig(experts=8, top_k=2, expert_d_ff=352))
    (refused,) = context_layout_errors(moe, 2, 1, 1)
    assert "model.moe" in refused and "dense model" in refused
    for errors in (seq, *heads, pipe, refused):
        assert "\n" not in errors
    assert layout_errors(long, Layout(2, 1, 1, 0, 1, context=4), 1) == heads  # the planner asks the same function
    with pytest.raises(ConfigError, match="context must be >= 1"):
        ParallelConfig(context=0).validate()


def test_search_takes_context_parallelism_when_only_it_fits():
    """A sequence too long for one GPU's activations: the search splits it over context ranks, and prefers C = 1
    (no all-to-all) when that fits."""
    long = ModelConfig(n_layers=8, d_model=1024, n_heads=8, n_kv_heads=8, d_ff=2816, vocab_size=4096,
                       seq_len=131072)
    degrees = {lay.context for lay in enumerate_layouts(long, 8, 8, 8)}
    assert degrees == {1, 2, 4, 8}
    tight = choose_layout(long, 8, 8, "h100", 40e9)
    assert tight.layout.context > 1 and tight.time.cp_comm_s > 0
    short = dataclasses.replace(long, seq_len=2048)
    assert choose_layout(short, 8, 64, "h100", 80e9).layout.context == 1
    # Only the degrees given are considered.
    assert {c.layout.context for c in rank_layouts(long, 8, 8, "h100", 40e9, contexts=(2,))} == {2}


def test_ulysses_all_to_all_by_hand():
    lay = Layout(tp=2, pp=1, dp=1, zero_stage=1, micro_batch_size=1, context=4)
    gbs, mfu = 2, 0.5
    st = step_time(CFG, lay, gbs, "h100", gpus_per_node=8, mfu=mfu)
    m = 2
    # Per layer and micro-batch: q, k, v and the output (forward) and their gradients (backward), each of the rank's
    # 256/4 tokens × its heads' width: (8 + 4 + 4 + 8) × 32 / 2 per token; 3/4 leave the rank.
    width = (8 + 4 + 4 + 8) * 32 / 2
    sent = 2 * 8 * m * 2 * (256 / 4) * width * 3 / 4
    assert st.cp_comm_s == pytest.approx(sent / NETWORKS["h100-sxm"].intra_node)
    # Past a node (tp·C = 16 > 8) the all-to-all crosses the inter-node links; recomputing every block adds a
    # forward's worth (4 of the 8 per layer).
    far = step_time(CFG, Layout(2, 1, 1, 1, 1, context=8), gbs, "h100", gpus_per_node=8, mfu=mfu)
    assert far.cp_comm_s == pytest.approx(2 * 8 * m * 2 * (256 / 8) * width * 7 / 8 / NETWORKS["h100-sxm"].inter_node)
    ck = step_time(CFG, Layout(2, 1, 1, 1, 1, 1, context=4), gbs, "h100", gpus_per_node=8, mfu=mfu)
    assert ck.cp_comm_s == pytest.approx(st.cp_comm_s * 3 / 2)
    # The TP all-reduces carry the rank's seq/C tokens; ZeRO reduces over the dp·C = 4 ranks.
    flat = step_time(CFG, Layout(2, 1, 4, 1, 1), 8, "h100", gpus_per_node=8, mfu=mfu)
    assert st.tp_comm_s == pytest.approx(flat.tp_comm_s / 4)  # m = 2 micro-batches in both
    assert st.dp_comm_s == pytest.approx(flat.dp_comm_s)
    assert st.total_s == pytest.approx(st.compute_s + st.tp_comm_s + st.dp_comm_s + st.cp_comm_s)
    assert step_time(CFG, Layout(2, 1, 4, 1, 1), 8, "h100").cp_comm_s == 0.0
