"""Between one layout's shards and the single-process model: gather a full state dict, and load one back.

Every checkpoint of a parallel run carries a consolidated `model.pt` (llm/model.py names, fp32), gathered
here at save time across tensor-parallel shards, pipeline stages and ZeRO-3 partitions. So debug mode and
`generate()` load any checkpoint directly, and a run in *another* layout starts from exactly those weights
(`checkpoint.init_from`): loading happens before `deepspeed.initialize`, into the full model before it is
sliced for tensor parallelism, or into each pipeline stage's parameters by name.
"""
from __future__ import annotations

import contextlib
import torch
import torch.distributed as dist
from torch import nn

from llm.config import ConfigError, ModelConfig
from parallel import experts
from parallel.names import local_full_names, model_param_names
from parallel.tensor import partition_dim
from parallel.tp_mappings import all_gather


def _zero3_gathered(module: nn.Module, zero_stage: int):
    if zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed
    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


@torch.no_grad()
def gather_full_state_dict(module: nn.Module, cfg: ModelConfig, topo, pipelined: bool,
                           zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The single-process fp32 state dict on global rank 0 (None elsewhere). Collective: call on every rank."""
    names = local_full_names(module, pipelined)
    local: dict[str, torch.Tensor] = {}
    with _zero3_gathered(module, zero_stage):
        for name, p in module.named_parameters():
            full_name = experts.full_name(names[name])
            t = p.detach()
            dim = partition_dim(full_name)
            if topo.tp > 1 and dim is not None:
                t = all_gather(t.contiguous(), dim, topo.tp_group)
            if experts.is_expert_param(name):
                t = experts.gather_experts(experts.layer_of(module, name), t)
            if topo.tp_rank == 0 and topo.dp_rank == 0:
                local[full_name] = t.float().cpu().clone()
    if topo.pp > 1:
        parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(local, parts, dst=0)
        if dist.get_rank() != 0:
            return None
        for part in parts:
            local.update(part)
    elif dist.get_rank() != 0:
        return None
    if cfg.tie_embeddings:
        local["lm_head.weight"] = local["tok_embeddings.weight"]
    missing = [n for n in model_param_names(cfg) if n not in local]
    if missing:
        raise RuntimeError(f"consolidation found no shard of {missing[:3]}")
    return {n: local[n] for n in model_param_names(cfg)}


@torch.no_grad()
def load_full_state_dict(module: nn.Module, full_sd: dict[str, torch.Tensor], topo, pipelined: bool) -> None:
    """Copy a single-process state dict into this rank's (stage's, TP shard's) parameters, before
    deepspeed.initialize. Raises ConfigError on a shape mismatch (a checkpoint of another model shape)."""
    names = local_full_names(module, pipelined)
    for name, p in module.named_parameters():
        full_name = names[name]
        if full_name not in full_sd:
            raise ConfigError(f"checkpoint.init_from has no parameter {full_name}")
        t = full_sd[full_name]
        dim = partition_dim(full_name)
        if topo.tp > 1 and dim is not None:
            t = t.chunk(topo.tp, dim)[topo.tp_rank]
        if t.shape != p.shape:
            raise ConfigError(f"checkpoint.init_from: {full_name} has shape {tuple(t.shape)}, this model's shard "
                              f"needs {tuple(p.shape)}: the checkpoint is of another model shape")
        p.copy_(t)
