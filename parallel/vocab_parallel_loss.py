"""Cross-entropy of logits split over the vocabulary across the tensor-parallel group (Megatron-LM's scheme), so
the full (tokens, vocab) logits are never gathered: three (tokens,)-sized all-reduces instead."""
from __future__ import annotations

import torch

from parallel.tp_mappings import all_reduce, group_rank


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
