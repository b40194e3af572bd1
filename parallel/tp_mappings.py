"""Autograd functions that move activations into and out of the tensor-parallel region.

Megatron-LM's scheme (Shoeybi et al. 2019, arXiv:1909.08053, §3 and Fig. 3): every collective in the forward
pass is paired with its conjugate in the backward pass, so the gradient of a replicated tensor is complete
on every rank and the gradient of a sharded tensor is exactly its shard of the full gradient.

    function                           forward                     backward
    copy_to_tensor_parallel_region     identity                    all-reduce           (Megatron's f)
    reduce_from_tensor_parallel_region all-reduce                  identity             (Megatron's g)
    scatter_to_tensor_parallel_region  keep own slice of last dim  all-gather last dim
    gather_from_tensor_parallel_region all-gather last dim         keep own slice
    scatter_to_sequence_parallel_region     keep own slice of seq      all-gather seq
    gather_from_sequence_parallel_region    all-gather seq             reduce-scatter seq (Korthikanti g)
    reduce_scatter_to_sequence_parallel_region  reduce-scatter seq    all-gather seq     (Korthikanti ḡ)

The last three implement sequence parallelism (Korthikanti et al. 2022, arXiv:2205.05198, §4.2.2): between
tensor-parallel regions activations are split along the sequence, and the all-reduce of plain TP becomes a
reduce-scatter on leaving a region plus an all-gather on entering the next one (same bytes moved).

Tensors are (batch, seq, ...) as in llm/model.py, so the sequence dimension is 1. `group=None` means a
single rank (no tensor parallelism): every function is then the identity, so TP layers also exist and can
be tested without process groups. Collectives work out of place: autograd may hand the same gradient
tensor to several branches (e.g. both arms of a residual add), so none is overwritten.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

SEQ_DIM = 1
"""The sequence dimension of activations in llm/model.py: (batch, seq, features)."""

# torch 2.13 renamed the single-tensor collectives; older releases (setup.py allows torch >= 2.4) only have
# the *_into_tensor / *_tensor names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def group_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


def all_reduce(x: torch.Tensor, group, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if group_size(group) == 1:
        return x
    out = x.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=op, group=group)
    return out


def all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Concatenate every rank's `x` along `dim`, in rank order."""
    n = group_size(group)
    if n == 1:
        return x
    front = x.movedim(dim, 0).contiguous()
    out = front.new_empty((n * front.shape[0],) + front.shape[1:])
    _all_gather_single(out, front, group=group)
    return out.movedim(0, dim)


def reduce_scatter(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Sum `x` over ranks and keep this rank's contiguous slice of `dim`."""
    n = group_size(group)
    if n == 1:
        return x
    _check_divisible(x, dim, n)
    front = x.movedim(dim, 0).contiguous()
    out = front.new_empty((front.shape[0] // n,) + front.shape[1:])
    _reduce_scatter_single(out, front, group=group)
    return out.movedim(0, dim)


def split(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """This rank's contiguous slice of `dim` (no communication)."""
    n = group_size(group)
    if n == 1:
        return x
    _check_divisible(x, dim, n)
    return x.chunk(n, dim)[group_rank(group)].contiguous()


def _check_divisible(x: torch.Tensor, dim: int, n: int) -> None:
    if x.shape[dim] % n != 0:
        raise ValueError(f"dimension {dim} of a {tuple(x.shape)} tensor does not split over {n} tensor-parallel "
                         "ranks (with sequence parallelism the sequence length must be a multiple of the TP size)")


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return all_reduce(grad, ctx.group), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return split(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return all_gather(grad, ctx.dim, ctx.group), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group, reduce_scatter_grad):
        ctx.dim, ctx.group, ctx.reduce_scatter_grad = dim, group, reduce_scatter_grad
        return all_gather(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        back = reduce_scatter if ctx.reduce_scatter_grad else split
        return back(grad, ctx.dim, ctx.group), None, None, None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return reduce_scatter(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return all_gather(grad, ctx.dim, ctx.group), None, None


def copy_to_tensor_parallel_region(x: torch.Tensor, group) -> torch.Tensor:
    return x if group_size(group) == 1 else _CopyToRegion.apply(x, group)


def reduce_from_tensor_parallel_region(x: torch.Tensor, group) -> torch.Tensor:
    return x if group_size(group) == 1 else _ReduceFromRegion.apply(x, group)


def scatter_to_tensor_parallel_region(x: torch.Tensor, group) -> torch.Tensor:
    return x if group_size(group) == 1 else _Scatter.apply(x, x.dim() - 1, group)


def gather_from_tensor_parallel_region(x: torch.Tensor, group) -> torch.Tensor:
    return x if group_size(group) == 1 else _Gather.apply(x, x.dim() - 1, group, False)


def scatter_to_sequence_parallel_region(x: torch.Tensor, group, dim: int = SEQ_DIM) -> torch.Tensor:
    return x if group_size(group) == 1 else _Scatter.apply(x, dim, group)


def gather_from_sequence_parallel_region(x: torch.Tensor, group, dim: int = SEQ_DIM,
                                         tensor_parallel_output_grad: bool = True) -> torch.Tensor:
    """All-gather the sequence. Backward reduce-scatters when the consumer is a TP layer (each rank's gradient
    is then a partial sum), else it only keeps this rank's slice."""
    if group_size(group) == 1:
        return x
    return _Gather.apply(x, dim, group, tensor_parallel_output_grad)


def reduce_scatter_to_sequence_parallel_region(x: torch.Tensor, group, dim: int = SEQ_DIM) -> torch.Tensor:
    return x if group_size(group) == 1 else _ReduceScatter.apply(x, dim, group)


def enter_tensor_parallel_region(x: torch.Tensor, group, sequence_parallel: bool) -> torch.Tensor:
    """Make a replicated (or, with sequence parallelism, sequence-split) activation the input of TP layers."""
    if sequence_parallel:
        return gather_from_sequence_parallel_region(x, group)
    return copy_to_tensor_parallel_region(x, group)


def exit_tensor_parallel_region(x: torch.Tensor, group, sequence_parallel: bool) -> torch.Tensor:
    """Sum the partial outputs of TP layers into a replicated (or sequence-split) activation."""
    if sequence_parallel:
        return reduce_scatter_to_sequence_parallel_region(x, group)
    return reduce_from_tensor_parallel_region(x, group)
