"""Megatron-style tensor parallelism for llm/model.py (Shoeybi et al. 2019, arXiv:1909.08053).

`apply_tensor_parallel` turns a single-process `Transformer` into this rank's shard of it, in place, by swapping
submodules (by the names model.py keeps stable) and slicing the single-process weights, so a TP run starts from
exactly the weights of TP=1:

    module                      layer                    weight slice (out, in)   split
    tok_embeddings              VocabParallelEmbedding   rows: vocab              output all-reduced
    attn.wq / wk / wv           ColumnParallelLinear     rows: heads              q and kv heads contiguous per rank
    attn.wo                     RowParallelLinear        columns: heads           output all-reduced
    mlp.w_gate / w_up           ColumnParallelLinear     rows: d_ff               same d_ff slice, so SwiGLU is local
    mlp.w_down                  RowParallelLinear        columns: d_ff            output all-reduced
    lm_head                     ColumnParallelLinear     rows: vocab              never gathered
    norms                       unchanged (replicated)

Each rank keeps n_heads/tp query heads and n_kv_heads/tp kv heads, both contiguous, so rank r's query heads
use exactly rank r's kv heads (a GQA group never straddles ranks). The logits stay split over the vocabulary and
the loss reduces (batch·seq)-sized vectors instead of gathering them: `model.head_loss` (what `lm_loss` trains with)
becomes `vocab_parallel_linear_cross_entropy`, the head and that loss fused over row chunks, and `model.loss_fn`
(for callers holding logits) `vocab_parallel_cross_entropy` (both parallel/vocab_parallel_loss.py).

Communication per block is Megatron's: the input of each Attention and SwiGLU enters the TP region once (a forward
pre-hook; the three q/k/v projections, and gate/up, then share one backward all-reduce), and wo and w_down each
all-reduce their output. With `sequence_parallel` (Korthikanti et al. 2022, arXiv:2205.05198) the
activations outside the TP region (norms, dropout, residual adds) are split along the sequence instead: those
all-reduces become reduce-scatters and the region entries all-gathers; norm weights, which then see only part
of the sequence, get their gradients summed over the TP group.
"""
from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from llm.model import Attention, RMSNorm, SwiGLU, Transformer
from parallel.topology import check_tensor_parallel
from parallel.tp_mappings import (all_reduce, enter_tensor_parallel_region,
                                  exit_tensor_parallel_region, gather_from_tensor_parallel_region, group_rank,
                                  group_size, scatter_to_tensor_parallel_region)
from parallel.vocab_parallel_loss import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

# How each module of llm/model.py is split, by the module-name suffixes that file promises to keep.
TP_PLAN = {
    "tok_embeddings": "vocab",
    "attn.wq": "column", "attn.wk": "column", "attn.wv": "column", "attn.wo": "row",
    "mlp.w_gate": "column", "mlp.w_up": "column", "mlp.w_down": "row",
    "lm_head": "column",
}
PARTITION_DIM = {"vocab": 0, "column": 0, "row": 1}
"""Dimension of the (out, in) / (vocab, d_model) weight that each style splits."""


def _mark_partitioned(p: nn.Parameter, dim: int) -> nn.Parameter:
    # Megatron's attribute names: DeepSpeed's is_model_parallel_parameter() reads `tensor_model_parallel` to count
    # a sharded parameter's gradient norm on every rank rather than once per TP group.
    p.tensor_model_parallel, p.partition_dim, p.partition_stride = True, dim, 1
    return p


def _shard(full: torch.Tensor, dim: int, group) -> torch.Tensor:
    return full.detach().chunk(group_size(group), dim)[group_rank(group)].clone()


def _sum_grad_over(p: nn.Parameter, group) -> None:
    """Make p's gradient the sum over `group` (for replicated weights that each rank sees part of the batch of)."""
    p.sequence_parallel = True
    p.register_hook(lambda grad: all_reduce(grad, group))


def _divide(n: int, group, what: str) -> int:
    tp = group_size(group)
    if n % tp != 0:
        raise ValueError(f"{what}={n} does not split over {tp} tensor-parallel ranks")
    return n // tp


class ColumnParallelLinear(nn.Module):
    """y = x Aᵀ with A split by output rows: this rank computes its slice of the output features.

    The input must be the same on every rank (or, with `sequence_parallel`, split along the sequence: it is then
    all-gathered). `enter_region=False` means the caller already passed it through enter_tensor_parallel_region
    (to share one collective among several layers). `gather_output` all-gathers the output features.
    group=None: a single rank.
    """

    def __init__(self, in_features: int, out_features: int, group=None, *, bias: bool = False,
                 gather_output: bool = False, enter_region: bool = True, sequence_parallel: bool = False,
                 device=None, dtype=None):
        super().__init__()
        self.group, self.gather_output = group, gather_output
        self.enter_region, self.sequence_parallel = enter_region, sequence_parallel
        self.in_features, self.out_features = in_features, out_features
        local = _divide(out_features, group, "out_features")
        self.weight = _mark_partitioned(nn.Parameter(torch.empty(local, in_features, device=device, dtype=dtype)), 0)
        self.bias = _mark_partitioned(nn.Parameter(torch.zeros(local, device=device, dtype=dtype)), 0) if bias else None

    @classmethod
    def from_dense(cls, linear: nn.Linear, group, **kwargs) -> "ColumnParallelLinear":
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, group, bias=linear.bias is not None,
                    device=w.device, dtype=w.dtype, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(_shard(w, 0, group))
            if linear.bias is not None:
                layer.bias.copy_(_shard(linear.bias, 0, group))
        layer.requires_grad_(w.requires_grad)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.enter_region:
            x = enter_tensor_parallel_region(x, self.group, self.sequence_parallel)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_tensor_parallel_region(y, self.group) if self.gather_output else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"(local {self.weight.shape[0]}), bias={self.bias is not None}, gather_output={self.gather_output}, "
                f"sequence_parallel={self.sequence_parallel}")


class RowParallelLinear(nn.Module):
    """y = x Aᵀ with A split by input columns: each rank multiplies its slice of the input features and the
    partial outputs are summed (all-reduce; with `sequence_parallel`, reduce-scatter along the sequence).

    `input_is_parallel=False` splits a replicated input first. The bias is replicated and added after the sum.
    """

    def __init__(self, in_features: int, out_features: int, group=None, *, bias: bool = False,
                 input_is_parallel: bool = True, sequence_parallel: bool = False, device=None, dtype=None):
        super().__init__()
        self.group, self.input_is_parallel, self.sequence_parallel = group, input_is_parallel, sequence_parallel
        self.in_features, self.out_features = in_features, out_features
        local = _divide(in_features, group, "in_features")
        self.weight = _mark_partitioned(nn.Parameter(torch.empty(out_features, local, device=device, dtype=dtype)), 1)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        if self.bias is not None and sequence_parallel and group_size(group) > 1:
            _sum_grad_over(self.bias, group)  # added to a sequence slice, so each rank's gradient is partial

    @classmethod
    def from_dense(cls, linear: nn.Linear, group, **kwargs) -> "RowParallelLinear":
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, group, bias=linear.bias is not None,
                    device=w.device, dtype=w.dtype, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(_shard(w, 1, group))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.requires_grad_(w.requires_grad)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tensor_parallel_region(x, self.group)
        y = exit_tensor_parallel_region(F.linear(x, self.weight), self.group, self.sequence_parallel)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features} (local {self.weight.shape[1]}), out_features={self.out_features}, "
                f"bias={self.bias is not None}, sequence_parallel={self.sequence_parallel}")


class VocabParallelEmbedding(nn.Module):
    """Embedding table split by vocabulary rows; rank r holds ids [r·V/tp, (r+1)·V/tp).

    Each rank looks up the ids it holds, writes zeros for the others, and the ranks sum (reduce-scatter along the
    sequence with `sequence_parallel`).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, group=None, *, sequence_parallel: bool = False,
                 device=None, dtype=None):
        super().__init__()
        self.group, self.sequence_parallel = group, sequence_parallel
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        local = _divide(num_embeddings, group, "num_embeddings")
        self.vocab_start = group_rank(group) * local
        self.weight = _mark_partitioned(nn.Parameter(torch.empty(local, embedding_dim, device=device, dtype=dtype)), 0)

    @classmethod
    def from_dense(cls, emb: nn.Embedding, group, **kwargs) -> "VocabParallelEmbedding":
        w = emb.weight
        layer = cls(emb.num_embeddings, emb.embedding_dim, group, device=w.device, dtype=w.dtype, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(_shard(w, 0, group))
        layer.requires_grad_(w.requires_grad)
        return layer

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.vocab_start
        outside = (local < 0) | (local >= self.weight.shape[0])
        x = F.embedding(local.masked_fill(outside, 0), self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return exit_tensor_parallel_region(x, self.group, self.sequence_parallel)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim} (local rows {self.vocab_start}.."
                f"{self.vocab_start + self.weight.shape[0] - 1}), sequence_parallel={self.sequence_parallel}")


def _style(name: str) -> str | None:
    """TP_PLAN style of a module (or, with a '.weight'/'.bias' suffix, of a parameter) name; None = replicated."""
    for suffix, style in TP_PLAN.items():
        if re.search(rf"(^|\.){re.escape(suffix)}(\.(weight|bias))?$", name):
            return style
    return None


def partition_dim(param_name: str) -> int | None:
    """Dimension along which tensor parallelism splits the llm/model.py parameter `param_name` (any prefix, e.g. a
    pipeline layer index), or None if it is replicated on every TP rank."""
    style = _style(param_name)
    if style is None or (style == "row" and param_name.endswith(".bias")):
        return None
    return PARTITION_DIM[style]


def _enter_region_hook(_module, args, *, group, sequence_parallel):
    return (enter_tensor_parallel_region(args[0], group, sequence_parallel),) + args[1:]


def apply_tensor_parallel(model: Transformer, topo, sequence_parallel: bool = False) -> Transformer:
    """Make `model` (the full single-process Transformer, identical on every rank) this rank's TP shard, in place.

    topo: a Topology (uses tp, tp_group). Swaps the layers of TP_PLAN for their parallel twins holding slices of the
    current weights (parallelize_modules), keeps tied embeddings tied (the embedding and lm_head share one vocabulary
    shard), and installs the vocab-parallel losses: model.head_loss (chunked, what `lm_loss` trains with) and
    model.loss_fn (of logits). `model(tokens)` then returns this rank's vocabulary slice of the logits. With
    sequence_parallel, the sequence length must be a multiple of tp.
    A no-op when topo.tp == 1. Raises ConfigError if the model's shape does not split over tp.

    Dropout: without sequence parallelism the residual stream is replicated, so every TP rank must draw the same
    dropout masks (same torch seed across the TP group).
    """
    if topo.tp == 1:
        return model
    check_tensor_parallel(model.cfg, topo.tp, sequence_parallel)
    tied = model.lm_head.weight is model.tok_embeddings.weight
    parallelize_modules(model, topo.tp_group, sequence_parallel)
    if tied:
        model.lm_head.weight = model.tok_embeddings.weight
    model.head_loss = partial(_head_loss, model.lm_head)
    model.loss_fn = partial(vocab_parallel_cross_entropy, group=topo.tp_group)
    return model


def _head_loss(head: ColumnParallelLinear, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Transformer.head_loss under TP: the vocab-parallel loss of `head`'s logits, chunked; `head` is looked up
    once (a swapped lm_head would need a new head_loss), its weight at each call."""
    return vocab_parallel_linear_cross_entropy(hidden, head.weight, targets, head.group, head.sequence_parallel)


def parallelize_modules(module: nn.Module, group, sequence_parallel: bool = False) -> nn.Module:
    """Swap, in place, every submodule of `module` that TP_PLAN names (any prefix: a whole Transformer, one Block, a
    pipeline stage holding `lm_head`...) for its parallel twin holding this rank's slice of the current weights
    (same device and dtype), and set each Attention's n_heads/n_kv_heads to the local counts.

    The TP regions are Megatron's: each Attention and SwiGLU. Their input enters the region once, through a forward
    pre-hook (so q/k/v, and gate/up, share one collective, and under sequence parallelism the attention sees the
    whole sequence), and wo/w_down leave it; lm_head enters on its own. With sequence_parallel, every RMSNorm
    weight's gradient is summed over `group` (a hook). Does not tie weights or set a loss (apply_tensor_parallel
    does). Raises ValueError if an Attention or SwiGLU is not where TP_PLAN expects it ('attn', 'mlp') or the heads
    do not split over the group, RuntimeError if `module` is already tensor-parallel.
    """
    tp = group_size(group)
    for name, child in module.named_modules():
        probe = "wq" if isinstance(child, Attention) else "w_gate" if isinstance(child, SwiGLU) else None
        if probe and _style(f"{name}.{probe}") is None:
            raise ValueError(f"parallelize_modules: TP_PLAN names {type(child).__name__} layers by their place in a "
                             f"Block ('attn', 'mlp'), found one at {name!r}; pass the Block or the model")
        if isinstance(child, Attention) and (child.n_heads % tp or child.n_kv_heads % tp):
            raise ValueError(f"{name}: n_heads={child.n_heads} and n_kv_heads={child.n_kv_heads} must both split "
                             f"over {tp} tensor-parallel ranks")
    region = dict(group=group, sequence_parallel=sequence_parallel)
    for name, child in list(module.named_modules()):
        style = _style(name)
        if style is None:
            continue
        if not isinstance(child, (nn.Linear, nn.Embedding)):
            raise RuntimeError(f"parallelize_modules: {name} is already a {type(child).__name__}")
        if style == "vocab":
            new = VocabParallelEmbedding.from_dense(child, **region)
        elif style == "row":
            new = RowParallelLinear.from_dense(child, **region)
        else:
            is_head = name.rpartition(".")[2] == "lm_head"  # the others sit in an Attention or SwiGLU
            new = ColumnParallelLinear.from_dense(child, enter_region=is_head, **region)
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent), attr, new)
    for child in module.modules():
        if isinstance(child, (Attention, SwiGLU)):
            child.register_forward_pre_hook(partial(_enter_region_hook, **region))
        if isinstance(child, Attention):
            child.n_heads //= tp
            child.n_kv_heads //= tp
        elif isinstance(child, RMSNorm) and sequence_parallel and tp > 1:
            _sum_grad_over(child.weight, group)
    return module
