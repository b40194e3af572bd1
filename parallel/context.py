"""Context parallelism: each sample's sequence split over `parallel.context` ranks, attention through DeepSpeed's
Ulysses all-to-all (Jacobs et al. 2023, arXiv:2309.14509).

A context rank holds a contiguous 1/C slice of every sample: embeddings, norms, MLPs and the chunked LM loss see
only that slice. Each attention layer's core (llm/model.py `CausalAttention`, swapped here, the model untouched)
is wrapped in `deepspeed.sequence.layer.DistributedAttention`, which exchanges q, k and v all-to-all so that every
rank holds the whole sequence for 1/C of the (query and key/value) heads, runs the core there, and exchanges the
output back. Rotary positions are applied before the exchange, so a rank's slice carries its positions in the whole
sample (`shard`). Document masking gathers the slices' document ids (integers, a few KB) for the full-sequence core.

The loss: a rank's mean over its slice is weighted by its share of the group's valid targets (`shard` gives both),
so that the group's sum is the mean over the whole sample. DeepSpeed sees the data × context ranks as its
data-parallel group (parallel/topology.py) and averages gradients over all of them, so the rank backpropagates its
share × C (parallel/engine.py `train_step`): the average is then the sum over context ranks of the data-parallel
mean. DeepSpeed's own Ulysses bookkeeping (an mpu with get_sequence_parallel_*) is not used: its ZeRO-3 reduce-scatter
averages where stages 0-2 sum (deepspeed 0.19.8), and no single loss scale is right for both.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from llm.model import Attention


class UlyssesAttention(nn.Module):
    """`local` (a CausalAttention over (batch, seq, heads, head_dim)) over the whole sequence of the context group."""

    def __init__(self, local: nn.Module, group):
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention
        self.group = group
        # (batch, seq, heads, dim): scatter the heads (dim 2), gather the sequence (dim 1).
        self.exchange = DistributedAttention(local, group, scatter_idx=2, gather_idx=1)

    def forward(self, q, k, v, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        if doc_ids is not None:
            parts = [torch.empty_like(doc_ids) for _ in range(dist.get_world_size(self.group))]
            dist.all_gather(parts, doc_ids.contiguous(), group=self.group)
            doc_ids = torch.cat(parts, dim=1)
        return self.exchange(q, k, v, 0, None, doc_ids)


def apply_context_parallel(model: nn.Module, group) -> int:
    """Wrap every attention core of `model` for the context group (after tensor parallelism, which leaves the
    cores alone). Returns the number of layers wrapped."""
    n = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.core = UlyssesAttention(module.core, group)
            n += 1
    return n


def shard(inputs: torch.Tensor, targets: torch.Tensor, kwargs: dict, cp: int, cp_rank: int, group,
          ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    """This context rank's slice of a micro-batch (inputs, targets (batch, seq), lm_loss keyword arguments) with its
    rotary positions in the whole sample, and the weight of its mean loss: its valid targets over the group's."""
    seq = inputs.shape[1] // cp
    cut = slice(cp_rank * seq, (cp_rank + 1) * seq)
    positions = kwargs.get("positions")
    if positions is None:
        positions = torch.arange(inputs.shape[1], device=inputs.device).expand_as(inputs)
    local = {key: value[:, cut] for key, value in kwargs.items()} | {"positions": positions[:, cut]}
    targets = targets[:, cut]
    valid = (targets != ignore_index).sum()
    total = valid.clone()
    dist.all_reduce(total, group=group)
    return inputs[:, cut], targets, local, valid.float() / total.float()


def context_loss(forward, inputs, targets, kwargs, weight) -> torch.Tensor:
    """This rank's weighted share of the group's mean loss (what the group sums to the sample's mean); `forward`: the
    engine (or model) whose forward takes `targets=` (llm/model.py `Transformer.forward`). Backpropagate it times the
    context degree (module docstring)."""
    if float(weight) == 0.0:
        # Every target of the slice ignored: its mean would be NaN (0/0); a zero keeps the graph, and every rank's
        # collectives inside the forward pass, as the other ranks run them.
        return forward(inputs, targets=torch.zeros_like(targets), **kwargs) * 0.0
    return forward(inputs, targets=targets, **kwargs) * weight
