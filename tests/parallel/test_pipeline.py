"""Pipeline parallelism (parallel/pipeline.py, pipeline_checkpoint.py): stage modules, partitioning, tied weights,
checkpoint consolidation, and real `deepspeed` runs whose losses match the single-process run.

Tolerance of the launcher runs: fp32, 1e-5 relative per step. Every pipeline layout computes the same
global-batch mean gradient from the same initial weights; what differs is only the order of floating-point
sums (gradients accumulated per stage, all-reduced over data-parallel ranks and across the tied embedding's
two copies, TP matmuls summed across ranks). That moves a loss of ~6 by a few fp32 ulps (measured
2e-8..1.1e-7 relative) and compounds over 5 Adam steps to far below 1e-5, while a real mistake moves it by far
more: measured, the last stage left out of the clipped gradient norm (DeepSpeed's default under PP, see
`mark_grad_norm_owners`) moves step 3 by 2.6e-4, and sequence parallelism through DeepSpeed's partitioned
stage transfers moves step 1 by 1.1e-3.
"""
from __future__ import annotations


import pytest
import torch

from llm.config import ModelConfig, RunConfig, TrainConfig, ParallelConfig
from llm.model import Transformer
from tests.parallel.launcher_utils import (launcher_config_dict, loss_table, max_rel_diff,
                                           run_deepspeed, run_single, train_losses,
                                           write_config)

FP32_TOL = 1e-5


def _cfg(tied=False, n_layers=4, **parallel) -> RunConfig:
    model = ModelConfig(n_layers=n_layers, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=512,
                        seq_len=32, tie_embeddings=tied)
    return RunConfig(model=model, train=TrainConfig(max_steps=5, seed=3), parallel=ParallelConfig(**parallel))


# ----------------------------------------------------------------------------------------------------------
# single process: specs, names, init, partition counts, consolidation


@pytest.mark.parametrize("tied", [False, True])
def test_stage_modules_rebuild_the_single_process_model_bit_for_bit(tied):
    from parallel.names import layer_prefix
    from parallel.pipeline import layer_specs
    cfg = _cfg(tied)
    specs = layer_specs(cfg)
    assert len(specs) == cfg.model.n_layers + 3
    full = Transformer(cfg.model, seed=cfg.train.seed).state_dict()
    rebuilt = {}
    for i, spec in enumerate(specs[:-1] if tied else specs):  # tied: the last spec is layer 0's module again
        for key, value in spec.build().state_dict().items():
            rebuilt[layer_prefix(i, cfg.model.n_layers) + key] = value
    if tied:
        rebuilt["lm_head.weight"] = rebuilt["tok_embeddings.weight"]
    assert list(rebuilt) == list(full)  # same names, same order
    for name in full:
        assert torch.equal(rebuilt[name], full[name]), name


def test_tied_specs_share_one_key_and_the_embedding_weight():
    from deepspeed.pipe import TiedLayerSpec
    from parallel.pipeline import TIED_KEY, EmbeddingPipe, layer_specs, tied_head_forward
    specs = layer_specs(_cfg(tied=True))
    first, last = specs[0], specs[-1]
    assert isinstance(first, TiedLayerSpec) and isinstance(last, TiedLayerSpec)
    assert first.key == last.key == TIED_KEY and first.typename is last.typename is EmbeddingPipe
    assert first.tied_weight_attr == last.tied_weight_attr == ["tok_embeddings.weight"]
    assert first.forward_fn is None and last.forward_fn is tied_head_forward
    # The tied head hands the loss the activations and the embedding table, the single-process model's lm_head.
    cfg = _cfg(tied=True)
    model = Transformer(cfg.model, seed=cfg.train.seed)
    x = torch.randn(2, 5, cfg.model.d_model)
    emb = first.build()
    out, weight = tied_head_forward(emb, x)
    assert out is x and weight is emb.tok_embeddings.weight
    torch.testing.assert_close(weight, model.lm_head.weight, rtol=0, atol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_last_stage_loss_is_the_models_chunked_loss(tied):
    """The last layer's (activations, head weight) through pipeline_loss_fn: the single-process model's
    `head_loss` and its gradients, bit for bit (the same chunked computation), never the full logits."""
    from torch.profiler import ProfilerActivity, profile
    from parallel.pipeline import layer_specs, pipeline_loss_fn, tied_head_forward
    cfg = _cfg(tied=tied)
    model = Transformer(cfg.model, seed=cfg.train.seed)
    head = layer_specs(cfg)[-1].build()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 512, cfg.model.d_model, generator=gen)  # 4 chunks of llm/chunked_loss.py's 1024 rows
    targets = torch.randint(0, cfg.model.vocab_size, (8, 512), generator=gen)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    outputs = tied_head_forward(head, x1) if tied else head(x1)  # tied: the spec builds the EmbeddingPipe
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = pipeline_loss_fn()(outputs, targets)
        loss.backward()
    ref = model.head_loss(x2, targets)
    ref.backward()
    assert torch.equal(loss, ref) and torch.equal(x1.grad, x2.grad)
    assert torch.equal(outputs[1].grad, model.lm_head.weight.grad)
    logits_bytes = x.shape[0] * x.shape[1] * cfg.model.vocab_size * 4
    assert max(e.cpu_memory_usage for e in prof.events()) <= logits_bytes // 4


def test_layer_counts_on_meta_equal_real_counts_and_partition_blocks_evenly():
    from deepspeed.runtime.utils import partition_balanced, partition_uniform
    from parallel.pipeline import layer_param_counts, layer_specs
    cfg = _cfg(n_layers=4)
    specs = layer_specs(cfg)
    counts = layer_param_counts(specs)
    assert counts == [sum(p.numel() for p in s.build().parameters()) for s in specs]
    assert sum(counts) == sum(p.numel() for p in Transformer(cfg.model).parameters())
    # What PipelineModule does with them (method 'parameters' / 'uniform'): every stage gets whole blocks.
    assert list(partition_balanced(counts, 2)) == [0, 3, 7]  # embedding + 2 blocks | 2 blocks + norm + head
    assert partition_uniform(len(specs), 2) == [0, 4, 7]
    parts = list(partition_balanced(counts, 4))
    blocks_per_stage = [sum(1 <= i <= 4 for i in range(a, b)) for a, b in zip(parts, parts[1:])]
    assert blocks_per_stage == [1, 1, 1, 1]


def test_sequence_parallel_refuses_partitioned_transfers():
    from types import SimpleNamespace
    from llm.config import ConfigError
    from parallel.pipeline import check_pipeline_transfers
    topo = SimpleNamespace(tp=2, pp=2, dp=1)
    check_pipeline_transfers(_cfg(tensor=2, pipeline=2), topo)  # no SP: DeepSpeed's partitioning is fine
    # With SP the generated DeepSpeed config turns the partitioned transfers off...
    check_pipeline_transfers(_cfg(tensor=2, pipeline=2, sequence_parallel=True), topo)
    # ...and a user's pass-through key that turns them back on is refused.
    on = {"pipeline": {"pipe_partitioned": True}}
    with pytest.raises(ConfigError, match="pipe_partitioned"):
        check_pipeline_transfers(_cfg(tensor=2, pipeline=2, sequence_parallel=True, deepspeed=on), topo)


def test_recompute_interval_follows_the_config():
    assert _cfg(activation_checkpointing="none").parallel.recompute_interval == 0
    assert _cfg(activation_checkpointing="full").parallel.recompute_interval == 1
    assert _cfg(activation_checkpointing="every_k", recompute_every_k=3).parallel.recompute_interval == 3


@pytest.mark.parametrize("tied,tp", [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_consolidation_maps_layer_files_back_to_model_names(tmp_path, tied, tp):
    """Files laid out as DeepSpeed writes them (layer_XX-model_YY), TP-sharded as tensor.py shards."""
    from parallel.names import layer_prefix
    from parallel.pipeline_checkpoint import load_pipeline_checkpoint
    from tests.parallel.tp_state import shard_state_dict
    cfg = _cfg(tied)
    m = cfg.model
    full = Transformer(m, seed=cfg.train.seed).state_dict()
    for r in range(tp):
        shard = shard_state_dict(full, m, r, tp) if tp > 1 else full
        for i in range(m.n_layers + (2 if tied else 3)):  # tied: no file for the head (a forward_fn)
            prefix = layer_prefix(i, m.n_layers)
            keys = {0: ["tok_embeddings.weight"], m.n_layers + 1: ["norm.weight"],
                    m.n_layers + 2: ["lm_head.weight"]}.get(i)
            layer = {k[len(prefix):]: v for k, v in shard.items()
                     if (k in keys if keys else k.startswith(prefix))}
            torch.save(layer, tmp_path / f"layer_{i:02d}-model_{r:02d}-model_states.pt")
    merged = load_pipeline_checkpoint(tmp_path, m)
    assert list(merged) == list(full)
    for name in full:
        assert torch.equal(merged[name], full[name]), name
    # And the result loads into the single-process model.
    Transformer(m).load_state_dict(merged)


def test_consolidation_names_what_is_missing(tmp_path):
    from parallel.pipeline_checkpoint import load_pipeline_checkpoint
    with pytest.raises(FileNotFoundError):
        load_pipeline_checkpoint(tmp_path, _cfg().model)
    torch.save({"tok_embeddings.weight": torch.zeros(512, 64)}, tmp_path / "layer_00-model_00-model_states.pt")
    with pytest.raises(KeyError, match="layers.0.attn_norm.weight"):
        load_pipeline_checkpoint(tmp_path, _cfg().model)


# ----------------------------------------------------------------------------------------------------------
# real ranks: the PipelineModule each rank builds


def _build_stage(tp, pp, tied):
    """On a DistWorkers rank: build the PipelineModule; return what the test checks (small tensors only)."""
    import torch.distributed as dist
    from deepspeed.runtime.utils import is_model_parallel_parameter
    from parallel.names import stage_param_names
    from parallel.pipeline import build_pipeline_module
    from parallel.topology import Topology

    topo = Topology(tp, pp)
    cfg = _cfg(tied, tensor=tp, pipeline=pp)
    module = build_pipeline_module(cfg, topo)
    names = stage_param_names(module)
    params = dict(module.named_parameters())
    counted_in_norm = 0  # DeepSpeed's fp32 clip_grad_norm_ rule (runtime/utils.py)
    for p in module.parameters():
        if module.mpu().get_model_parallel_rank() == 0 or is_model_parallel_parameter(p):
            counted_in_norm += p.numel()
    return {"rank": dist.get_rank(), "tp_rank": topo.tp_rank, "pp_rank": topo.pp_rank, "dp_rank": topo.dp_rank,
            "parts": [int(x) for x in module.parts], "local": (int(module._local_start), int(module._local_stop)),
            "weights": {names[n]: p.detach().clone() for n, p in params.items()},
            "tied_keys": sorted(module.tied_modules.keys()), "counted_in_norm": counted_in_norm}


@pytest.fixture(scope="module")
def workers():
    from tests.parallel.dist_utils import shared_workers
    return shared_workers(4)


@pytest.mark.parametrize("tp,pp,tied", [(1, 2, False), (1, 2, True), (2, 2, False), (2, 2, True)])
def test_each_rank_holds_its_shard_of_the_single_process_weights(workers, tp, pp, tied):
    from tests.parallel.tp_state import shard_state_dict
    cfg = _cfg(tied)
    full = Transformer(cfg.model, seed=cfg.train.seed).state_dict()
    results = workers.run(_build_stage, tp, pp, tied)
    dp = 4 // (tp * pp)
    seen = set()
    for r in results:
        assert r["parts"] == [0, 3, 7]
        assert r["local"] == ((0, 3) if r["pp_rank"] == 0 else (3, 7))
        shard = shard_state_dict(full, cfg.model, r["tp_rank"], tp) if tp > 1 else full
        for name, value in r["weights"].items():
            assert torch.equal(value, shard[name]), (r["rank"], name)
        seen |= set(r["weights"])
        # Tied: both the first and the last stage hold the embedding module.
        assert r["tied_keys"] == (["embeddings"] if tied else [])
    assert seen | ({"lm_head.weight"} if tied else set()) == set(full)
    # Every parameter counted exactly once in the clipped gradient norm, per data-parallel replica.
    unique = sum(p.numel() for p in Transformer(cfg.model).parameters())  # tied counted once by .parameters()
    for d in range(dp):
        assert sum(r["counted_in_norm"] for r in results if r["dp_rank"] == d) == unique


# ----------------------------------------------------------------------------------------------------------
# real launches: per-step losses against the single-process run

LAYOUTS = {
    # name: (world size, overrides, reference)
    "pp2": (2, ["parallel.pipeline=2"], "untied"),
    "pp2-tied-ckpt-uniform": (2, ["parallel.pipeline=2", "model.tie_embeddings=true",
                                  "parallel.activation_checkpointing=full", "parallel.pipeline_partition=uniform"],
                              "tied"),
    "pp2-dp2": (4, ["parallel.pipeline=2"], "untied"),
    "tp2-pp2": (4, ["parallel.pipeline=2", "parallel.tensor=2"], "untied"),
    "tp2-pp2-dp2": (8, ["parallel.pipeline=2", "parallel.tensor=2"], "untied"),
    # Sequence parallelism under PP: the generated DeepSpeed config turns off the partitioned transfers.
    "tp2-pp2-sp": (4, ["parallel.pipeline=2", "parallel.tensor=2", "parallel.sequence_parallel=true"], "untied"),
    "tp2-pp2-tied": (4, ["parallel.pipeline=2", "parallel.tensor=2", "model.tie_embeddings=true"], "tied"),
}


@pytest.fixture(scope="module")
def launch_setup(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("pipeline")
    data = tiny_data
    config = write_config(root / "cfg.yaml", launcher_config_dict(data, root / "unused"))
    run_single(config, root / "single-untied")
    run_single(config, root / "single-tied", ["model.tie_embeddings=true"])
    return root, config


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_pipeline_layout_matches_single_process(launch_setup, name):
    root, config = launch_setup
    world, overrides, ref_name = LAYOUTS[name]
    run_deepspeed(config, root / name, world, overrides, timeout=600)
    reference, losses = train_losses(root / f"single-{ref_name}"), train_losses(root / name)
    assert len(losses) == 5
    assert max_rel_diff(reference, losses) < FP32_TOL, loss_table(reference, {name: losses})
    # The consolidated pipeline checkpoint is the single-process model after the same 5 steps.
    from llm.config import load_config
    from parallel.pipeline_checkpoint import load_pipeline_checkpoint
    cfg = load_config(config, [o for o in overrides if o.startswith("model.")])
    merged = load_pipeline_checkpoint(root / name / "checkpoints" / "step_00000005" / "deepspeed", cfg.model)
    single = torch.load(root / f"single-{ref_name}" / "checkpoints" / "step_00000005" / "model.pt")
    assert list(merged) == list(single)
    for key in single:
        torch.testing.assert_close(merged[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
