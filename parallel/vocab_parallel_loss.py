"""Cross-entropy of logits split over the vocabulary across the tensor-parallel group (Megatron-LM's scheme,
Shoeybi et al. 2019, arXiv:1909.08053 §3), so the full (tokens, vocab) logits are never gathered: all-reduces of
(tokens,)-sized vectors (the max, the target logit, the sum of exponentials) instead.

`vocab_parallel_linear_cross_entropy` is what training uses: the LM head and this loss fused over row chunks as
llm/chunked_loss.py does it, so each rank holds one chunk's (rows, vocab/tp) logits at a time, never its whole
(tokens, vocab/tp) slice; `vocab_parallel_cross_entropy` takes that slice, for callers that hold logits.

Measured (peak RSS growth per rank of one loss forward + backward in fresh processes, tp=2 gloo ranks on CPU,
fp32, 8 × 1024 tokens, d_model 256, vocab 32768; bench/bench_head_loss_memory.py): 1021 MiB per rank with the
(tokens, vocab/tp) slice (`vocab_parallel_cross_entropy` of F.linear) vs 118-134 MiB chunked.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from llm.chunked_loss import CHUNK_ROWS, LinearCrossEntropy, matmul_dtype
from parallel.tp_mappings import all_reduce, enter_tensor_parallel_region, group_rank


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of logits split over the vocabulary (Megatron-LM's scheme): all-reduce the max
    (stability), the target logit and the sum of exponentials; the gradient softmax - onehot is local."""

    @staticmethod
    def forward(ctx, logits, targets, group, vocab_start):
        logits_max = all_reduce(logits.max(dim=-1).values, group, op=torch.distributed.ReduceOp.MAX)
        shifted = logits - logits_max.unsqueeze(-1)
        local = targets - vocab_start
        outside = (local < 0) | (local >= logits.shape[-1])
        local = local.masked_fill(outside, 0)
        target_logit = shifted.gather(-1, local.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0)
        target_logit = all_reduce(target_logit, group)
        exp = shifted.exp_()
        sum_exp = all_reduce(exp.sum(dim=-1), group)
        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, local, outside)
        return sum_exp.log() - target_logit

    @staticmethod
    def backward(ctx, grad):
        softmax, local, outside = ctx.saved_tensors
        grad_logits = softmax * grad.unsqueeze(-1)
        hit = (~outside).to(grad.dtype) * grad
        grad_logits.scatter_add_(-1, local.unsqueeze(-1), -hit.unsqueeze(-1))
        return grad_logits, None, None, None


def vocab_parallel_cross_entropy(logits_shard: torch.Tensor, targets: torch.Tensor, group,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy (fp32) over the positions whose target is not ignore_index, from this rank's
    contiguous vocabulary slice of the logits; equal to F.cross_entropy on the full logits, on every rank.

    logits_shard: (..., vocab/tp), the output of a vocab-split lm_head; targets: (...) int64 ids in [0, vocab)
    or ignore_index (other out-of-range ids are not detected). group: the tensor-parallel group (None: one rank).
    """
    logits = logits_shard.float().flatten(0, -2)
    targets = targets.flatten()
    vocab_start = group_rank(group) * logits.shape[-1]
    per_token = _VocabParallelCrossEntropy.apply(logits, targets, group, vocab_start)
    valid = targets != ignore_index
    return per_token.masked_fill(~valid, 0.0).sum() / valid.sum()


def _global_stats(z: torch.Tensor, t: torch.Tensor, vocab_start: int, group):
    """From this rank's fp32 logits slice z (rows, vocab/tp) of targets t: the all-reduced max m, the target
    logit (all-reduced: one rank holds it) and Σ exp(z − m) over the whole vocabulary, with this rank's local target
    columns and whether it holds each row's target. z is turned into exp(z − m), in place."""
    m = all_reduce(z.max(-1).values, group, op=torch.distributed.ReduceOp.MAX)
    local = t - vocab_start
    inside = (local >= 0) & (local < z.shape[-1])  # ignore_index (negative) is never inside
    local = torch.where(inside, local, 0)[:, None]
    target = torch.where(inside, z.gather(1, local).squeeze(1), 0.0)
    exp = z.sub_(m[:, None]).exp_()
    target, sum_exp = all_reduce(torch.stack([target, exp.sum(-1)]), group)  # one collective for both sums
    return m, target, sum_exp, local, inside, exp


def _chunk_loss_and_grads(h, weight, t, ignore_index, inv_n_valid, *, group, vocab_start):
    """llm/chunked_loss.py's `chunk_loss_and_grads` over a vocabulary slice: the same loss on every rank, this
    rank's share of d(loss)/dh (the TP region's backward all-reduces it) and its slice's d(loss)/dweight."""
    z = F.linear(h, weight)
    m, target, sum_exp, local, inside, exp = _global_stats(z.float(), t, vocab_start, group)
    valid = t != ignore_index
    loss_sum = torch.where(valid, m + sum_exp.log() - target, 0.0).sum()
    g = exp.div_(sum_exp[:, None])  # softmax over the whole vocabulary, this rank's columns
    g.scatter_add_(1, local, -inside.float()[:, None])
    g.mul_(torch.where(valid, inv_n_valid, 0.0)[:, None])
    g = g.to(z.dtype)
    return loss_sum, (g @ weight.to(z.dtype)).to(h.dtype), (g.T @ h.to(z.dtype)).float()


def vocab_parallel_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, group,
                                        sequence_parallel: bool = False, ignore_index: int = -100,
                                        chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean cross-entropy (fp32 softmax) of logits = hidden · weightᵀ split over the vocabulary, on every rank the
    same, without any rank holding more than chunk_rows rows of its logits slice.

    hidden: (batch, seq, d_model) as a ColumnParallelLinear lm_head takes it: replicated over the TP group, or with
    sequence_parallel this rank's slice of the sequence (all-gathered here); it enters the TP region here (the
    backward all-reduces or reduce-scatters its gradient). weight: (vocab/tp, d_model), this rank's contiguous
    vocabulary slice. targets: (batch, seq) int64, the full sequence on every rank. group: the TP group (None:
    one rank, then equal to llm/chunked_loss.py's `linear_cross_entropy`). In fp16 it is the unchunked
    `vocab_parallel_cross_entropy` (llm/chunked_loss.py says why).
    """
    x = enter_tensor_parallel_region(hidden, group, sequence_parallel)
    x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    if matmul_dtype(x, weight) == torch.float16:
        return vocab_parallel_cross_entropy(F.linear(x, weight), targets, group, ignore_index)
    vocab_start = group_rank(group) * weight.shape[0]
    step = partial(_chunk_loss_and_grads, group=group, vocab_start=vocab_start)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(x, weight, targets, ignore_index, chunk_rows, step)
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[0], chunk_rows):  # no gradient wanted (evaluation): the loss alone
        t = targets[s:s + chunk_rows]
        m, target, sum_exp, *_ = _global_stats(F.linear(x[s:s + chunk_rows], weight).float(), t, vocab_start, group)
        total += torch.where(t != ignore_index, m + sum_exp.log() - target, 0.0).sum()
    return total / (targets != ignore_index).sum()
