"""The optimizer every trainer builds: AdamW with weight decay on matrices only."""
from __future__ import annotations

import torch

from llm.config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: norms' gains and (tied) embeddings' duplicates excluded, as GPT-2/Llama recipes."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    # Named: DeepSpeed splits each group into expert and non-expert groups for an MoE model, keyed by the name.
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def make_optimizer(model: torch.nn.Module, o: OptimConfig) -> torch.optim.AdamW:
    # fused=False: the per-parameter loop on CPU (torch picks foreach by itself only for CUDA tensors). Either
    # way DeepSpeed's torch AdamW is built with the same `fused` (parallel/ds_config.py), so debug mode and every
    # layout run one kernel and the equivalence tests compare like with like.
    return torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                             fused=o.fused)
