"""Apply a run's layout to its model: one function, in one documented order, over an explicit Topology.

torchtitan's `parallelize_llama` is the model: llm/model.py never knows it is parallel, and the backend
(parallel/engine.py) never hides the order in its constructor. ZeRO sharding, mixed precision and gradient
accumulation over the data-parallel group come after this, from DeepSpeed (`initialize_engine`).
"""
from __future__ import annotations

import torch
from torch import nn

from llm.config import RunConfig
from llm.model import Block, SwiGLU, Transformer
from llm.train.compile import compile_blocks
from parallel.consolidate import load_full_state_dict
from parallel.context import apply_context_parallel
from parallel.pipeline import build_pipeline_module
from parallel.tensor import apply_tensor_parallel
from parallel.universal import universal_checkpoint_info
from parallel.topology import Topology


def parallelize(cfg: RunConfig, topo: Topology) -> nn.Module:
    """This rank's part of the model of `cfg` under `topo`, ready for `deepspeed.initialize`.

    1. Tensor parallelism: the single-process Transformer, built identically on every rank, becomes this rank's
       shard (its layers swapped for their parallel twins, slicing the full weights), so a TP run starts from
       exactly the weights of TP=1.
    1b. Context parallelism: every attention core wrapped in DeepSpeed's Ulysses all-to-all (parallel/context.py).
    2. Pipeline split: with topo.pp > 1 a DeepSpeed PipelineModule builds only this stage's layers instead, each
       made tensor-parallel as it is built, with the checkpoint interval of step 3 (parallel/pipeline.py).
    3. parallel.tiled_mlp (DeepSpeed's TiledMLP), then activation checkpointing, after tensor parallelism so
       that the recomputed forward is the sharded one.
    4. train.compile: each block's forward compiled (llm/train/compile.py), after 1-3 so that the graph is the
       sharded, checkpointed one. Measured to train within fp32 rounding of eager (<1e-7 relative over 5 steps)
       under DP ZeRO-1/2/3, TP2, PP2 and activation checkpointing with deepspeed 0.19.8
       (tests/llm/train/test_compile.py).
    5. checkpoint.init_from: the consolidated weights of any layout copied into this rank's shards, by
       llm/model.py names (parallel/consolidate.py).
    6. The tensor-parallel partition patterns of DeepSpeed's universal checkpoint, saved with every checkpoint,
       so that a later run can resume in another layout (parallel/universal.py).
    Raises ConfigError when the model does not split over the layout or init_from does not fit it.
    """
    p = cfg.parallel
    if topo.pp > 1:
        model = build_pipeline_module(cfg, topo)
        blocks = [m for m in model.modules() if isinstance(m, Block)]
    else:
        model = Transformer(cfg.model, seed=cfg.train.seed)
        apply_tensor_parallel(model, topo, sequence_parallel=p.sequence_parallel)
        if topo.cp > 1:
            apply_context_parallel(model, topo.cp_group)
        apply_tiled_mlp(model, p.tiled_mlp)
        apply_activation_checkpointing(model, p.recompute_interval)
        blocks = model.layers
    if cfg.parallel.zero_stage == 3 and topo.pp == 1:
        # The chunked loss reads lm_head's weight without calling lm_head (llm/model.py `lm_loss`), so ZeRO-3 must
        # gather it with the model's own forward rather than lm_head's.
        import deepspeed
        deepspeed.zero.register_external_parameter(model, model.lm_head.weight)
    if cfg.train.compile:
        compile_blocks(blocks)
    if cfg.checkpoint.init_from:
        from llm.train.checkpoint import read_model_weights
        load_full_state_dict(model, read_model_weights(cfg.checkpoint.init_from), topo, topo.pp > 1)
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO
    setattr(model, UNIVERSAL_CHECKPOINT_INFO, universal_checkpoint_info(cfg.model))
    return model


def apply_activation_checkpointing(model: Transformer, interval: int) -> None:
    """Recompute blocks 0, k, 2k, ... (k = interval; 0: none) in the backward pass (non-reentrant
    torch.utils.checkpoint).

    The forward is overridden on the instance rather than wrapped in a new module, so parameter names
    and state dicts stay those of llm/model.py.
    """
    if interval == 0:
        return
    from torch.utils.checkpoint import checkpoint

    for i, block in enumerate(model.layers):
        if i % interval:
            continue
        plain = block.forward

        def forward(x, cache=None, start_pos=0, positions=None, doc_ids=None, _plain=plain):
            if cache is None and torch.is_grad_enabled():
                return checkpoint(_plain, x, None, 0, positions, doc_ids, use_reentrant=False)
            return _plain(x, cache, start_pos, positions, doc_ids)

        block.forward = forward


def apply_tiled_mlp(model: Transformer, shards: int) -> None:
    """Run every dense block's SwiGLU through DeepSpeed's TiledMLP over `shards` slices of the sequence (0: none):
    no MLP activation is kept in the forward pass, and the backward recomputes them slice by slice. Under ZeRO the
    weights are handed to it, so that their gradients are reduced once, after the last slice. Overridden on the
    instance, as activation checkpointing is, so names and state dicts stay llm/model.py's."""
    if shards == 0:
        return
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    for block in model.layers:
        if not isinstance(block.mlp, SwiGLU):
            continue
        mlp, plain = block.mlp, block.mlp.forward

        def forward(x, _mlp=mlp, _plain=plain):
            if not torch.is_grad_enabled():
                return _plain(x)
            return TiledMLP.apply(lambda _self, xs: _plain(xs), _mlp, x, shards, list(_mlp.parameters()))

        mlp.forward = forward

