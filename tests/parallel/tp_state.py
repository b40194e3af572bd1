"""Test-only helpers between a tensor-parallel model and the single-process state dict, on every TP rank.

Production code gathers and loads through parallel/consolidate.py (rank 0 only, and across pipeline stages and
ZeRO-3 partitions); these simpler twins let a test compare every rank's shard with the dense reference.
"""
from __future__ import annotations

import torch
from torch import nn

from llm.config import ModelConfig
from parallel.tensor import partition_dim
from parallel.topology import check_tensor_parallel
from parallel.tp_mappings import all_gather


@torch.no_grad()
def gather_tensor_parallel_state_dict(model: nn.Module, topo) -> dict[str, torch.Tensor]:
    """The full single-process state dict (names as in llm/model.py) of a TP-sharded model, on CPU, on every
    TP rank (collective over topo.tp_group: call it on all of them). Tied weights stay one tensor under both names.
    """
    out, seen = {}, {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            full = t.detach()
            if getattr(t, "tensor_model_parallel", False):
                full = all_gather(full, t.partition_dim, topo.tp_group)
            seen[id(t)] = full.to("cpu", copy=True)
        out[name] = seen[id(t)]
    return out


def shard_state_dict(full_sd: dict[str, torch.Tensor], cfg: ModelConfig, tp_rank: int,
                     tp: int) -> dict[str, torch.Tensor]:
    """Rank tp_rank's shard of a single-process state dict, as apply_tensor_parallel would hold it (the inverse of
    gather_tensor_parallel_state_dict). Raises ConfigError if cfg does not split over tp."""
    check_tensor_parallel(cfg, tp)
    out, seen = {}, {}
    for name, t in full_sd.items():
        if id(t) not in seen:
            dim = partition_dim(name)
            seen[id(t)] = t.clone() if dim is None else t.chunk(tp, dim)[tp_rank].clone()
        out[name] = seen[id(t)]
    return out
