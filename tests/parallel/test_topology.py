"""Layout validation (single process) and the process groups of Topology on 2 and 4 gloo ranks."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from llm.config import ConfigError, ModelConfig, ParallelConfig, RunConfig
from parallel.topology import Topology, check_layout
from tests.parallel.dist_utils import shared_workers

MODEL = dict(n_layers=4, d_model=64, n_heads=8, n_kv_heads=4, d_ff=128, vocab_size=128, seq_len=16)


def _layout(tp=1, pp=1, sp=False, **model):
    return ModelConfig(**dict(MODEL, **model)), ParallelConfig(tensor=tp, pipeline=pp, sequence_parallel=sp)


# --------------------------------------------------------------------------------------------------------------
# check_layout


@pytest.mark.parametrize("tp,pp,world,expected", [
    (1, 1, 1, (1, 1, 1)), (2, 1, 8, (2, 1, 4)), (2, 2, 8, (2, 2, 2)), (4, 4, 16, (4, 4, 1)), (1, 2, 6, (1, 2, 3)),
])
def test_check_layout_returns_degrees(tp, pp, world, expected):
    assert check_layout(_layout(tp, pp), world) == expected


def test_check_layout_accepts_a_run_config():
    cfg = RunConfig(model=ModelConfig(**MODEL), parallel=ParallelConfig(tensor=2, pipeline=2))
    assert check_layout(cfg, 8) == (2, 2, 2)


@pytest.mark.parametrize("layout,world,message", [
    (_layout(tp=2, pp=2), 6, "world size 6 is not divisible by parallel.tensor=2 × parallel.pipeline=2 = 4"),
    (_layout(tp=8, n_kv_heads=4), 8, "parallel.tensor=8 does not divide model.n_kv_heads=4"),
    (_layout(tp=4, vocab_size=130), 4, "parallel.tensor=4 does not divide model.vocab_size=130"),
    (_layout(tp=4, d_ff=138), 4, "parallel.tensor=4 does not divide model.d_ff=138"),
    (_layout(pp=8), 8, "model.n_layers=4 is fewer than parallel.pipeline=8 stages"),
    (_layout(tp=4, sp=True, seq_len=18), 4, "parallel.tensor=4 does not divide model.seq_len=18"),
])
def test_check_layout_names_keys_and_values(layout, world, message):
    with pytest.raises(ConfigError) as e:
        check_layout(layout, world)
    assert message in str(e.value)


def test_check_layout_reports_every_violation():
    model = ModelConfig(**dict(MODEL, n_heads=6, n_kv_heads=6, head_dim=8, d_model=48, d_ff=96))
    with pytest.raises(ConfigError) as e:
        check_layout((model, ParallelConfig(tensor=4)), 6)
    text = str(e.value)
    assert "world size 6 is not divisible by parallel.tensor=4 × parallel.pipeline=1 = 4" in text
    assert "parallel.tensor=4 does not divide model.n_heads=6" in text
    assert "parallel.tensor=4 does not divide model.n_kv_heads=6" in text


def test_the_issue_example():
    with pytest.raises(ConfigError, match="parallel.tensor=3 does not divide model.n_heads=8"):
        check_layout(_layout(tp=3, n_kv_heads=8, d_ff=129, vocab_size=129), 3)


# --------------------------------------------------------------------------------------------------------------
# Topology on real ranks


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"world{n}")
def workers(request):
    return shared_workers(request.param)


def _members(group) -> list[int]:
    """Global ranks of `group`, found with a collective (independent of how the group was built)."""
    mask = torch.zeros(dist.get_world_size())
    mask[dist.get_rank()] = 1
    dist.all_reduce(mask, group=group)
    return mask.nonzero().flatten().tolist()


def check_topology(tp: int, pp: int) -> str:
    from deepspeed.utils import bwc
    topo = Topology(tp, pp)
    world, rank = dist.get_world_size(), dist.get_rank()
    dp = world // (tp * pp)
    assert (topo.tp, topo.pp, topo.dp) == (tp, pp, dp)
    # Row-major over (pipe, data, model): TP ranks are adjacent, pipeline stages farthest apart.
    assert rank == (topo.pp_rank * dp + topo.dp_rank) * tp + topo.tp_rank

    def same(**fixed):  # global ranks whose coordinates agree with `fixed`
        return [r for r in range(world) if all(getattr(_coord(r, tp, dp), k) == v for k, v in fixed.items())]

    assert _members(topo.tp_group) == same(pipe=topo.pp_rank, data=topo.dp_rank)
    assert _members(topo.dp_group) == same(pipe=topo.pp_rank, model=topo.tp_rank)
    assert _members(topo.pp_group) == same(data=topo.dp_rank, model=topo.tp_rank)
    # The tensor-parallel group is the DeepSpeed grid's slice group (what PipelineModule uses).
    assert topo.tp_group is topo.grid.get_slice_parallel_group()
    # DeepSpeed's mpu view: tensor = slice group, "model" = every axis but data.
    assert bwc.bwc_tensor_model_parallel_rank(topo) == topo.tp_rank
    assert bwc.bwc_tensor_model_parallel_world_size(topo) == tp
    assert bwc.bwc_tensor_model_parallel_group(topo) is topo.tp_group
    assert bwc.bwc_pipeline_parallel_world_size(topo) == pp
    assert (topo.get_data_parallel_rank(), topo.get_data_parallel_world_size()) == (topo.dp_rank, dp)
    assert topo.get_data_parallel_group_ranks() == _members(topo.dp_group)
    assert topo.get_model_parallel_world_size() == tp * pp
    assert _members(topo.get_model_parallel_group()) == same(data=topo.dp_rank)
    assert topo.get_tensor_model_parallel_src_rank() == _members(topo.tp_group)[0]
    assert not hasattr(topo, "get_sequence_parallel_world_size")  # would read as Ulysses to DeepSpeed
    assert (topo.is_first_stage, topo.is_last_stage) == (topo.pp_rank == 0, topo.pp_rank == pp - 1)
    return topo.coords()


def _coord(rank: int, tp: int, dp: int):
    from types import SimpleNamespace
    return SimpleNamespace(pipe=rank // (tp * dp), data=rank // tp % dp, model=rank % tp)


LAYOUTS = {2: [(1, 1), (2, 1), (1, 2)], 4: [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (1, 4)]}


def test_topology_groups(workers):
    for tp, pp in LAYOUTS[workers.world_size]:
        coords = workers.run(check_topology, tp, pp)
        dp = workers.world_size // (tp * pp)
        assert coords[0] == f"tp=0/{tp} pp=0/{pp} dp=0/{dp}"
        assert coords[-1] == f"tp={tp - 1}/{tp} pp={pp - 1}/{pp} dp={dp - 1}/{dp}"
        assert len(set(coords)) == workers.world_size


def check_zero_reduces_over_data_parallel_only(tp: int) -> float:
    """One ZeRO-1 SGD step of a TP model with mpu=topo equals one clipped SGD step of the single-process model on
    the union of the data-parallel batches. That needs gradients averaged over dp only (averaging over the world
    would mix different TP shards, broadcasting initial weights over the world would overwrite them), and the
    global gradient norm for clipping summed over TP shards with replicated weights counted once."""
    import deepspeed
    from llm.model import Transformer
    from parallel.tensor import apply_tensor_parallel
    from tests.parallel.tp_state import gather_tensor_parallel_state_dict
    topo = Topology(tp)
    cfg, lr, clip = ModelConfig(**dict(MODEL, n_layers=2)), 0.5, 1.0
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, cfg.vocab_size, (topo.dp, 2, 8), generator=gen)
    targets = torch.randint(0, cfg.vocab_size, (topo.dp, 2, 8), generator=gen)

    dense = Transformer(cfg, seed=0)
    torch.stack([dense.compute_loss(tokens[i], targets[i]) for i in range(topo.dp)]).mean().backward()
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in dense.parameters()]))
        assert norm > clip, "the test should exercise clipping"
        scale = clip / (norm + 1e-6)  # DeepSpeed's clip coefficient
        expected = {n: p - lr * scale * p.grad for n, p in dense.named_parameters()}

    model = apply_tensor_parallel(Transformer(cfg, seed=0), topo)
    ds_config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                 "zero_optimization": {"stage": 1}, "zero_allow_untested_optimizer": True,
                 "gradient_clipping": clip,
                 "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                                      config=ds_config, mpu=topo)
    assert engine.dp_world_size == topo.dp
    loss = engine.module.compute_loss(tokens[topo.dp_rank], targets[topo.dp_rank])
    engine.backward(loss)
    engine.step()
    full = gather_tensor_parallel_state_dict(engine.module, topo)
    err = 0.0
    for name, want in expected.items():
        torch.testing.assert_close(full[name], want, atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")
        err = max(err, (full[name] - want).abs().max().item())
    return err


def test_deepspeed_accepts_topology_as_mpu(workers):
    tp = 2  # 2 ranks: tp=2 dp=1; 4 ranks: tp=2 dp=2
    errors = workers.run(check_zero_reduces_over_data_parallel_only, tp, timeout_s=120)
    print(f"\nZeRO-1 step tp={tp} dp={workers.world_size // tp}: max abs error {max(errors):.2e}")
