"""Linear + cross-entropy over row chunks, so training never holds the full (batch, seq, vocab) logits.

The LM head and the loss are fused the way Liger-Kernel's `fused_linear_cross_entropy` does it (Hsu et al. 2024,
arXiv:2410.10989): the forward pass walks the rows in chunks, and for each one computes its logits, its share of
the loss and, right away, its gradients (softmax − one-hot, over the valid targets), then drops the logits. Peak
memory for the loss is one chunk's logits (rows × vocab) instead of all of them, at the same FLOPs as the plain
path (the three matmuls of a linear layer's forward and backward). The price: gradients are computed in the
forward pass even if backward is never called, so the no-grad path (evaluation) computes only the loss.

Measured (peak RSS growth of one loss forward + backward in a fresh process, fp32, d_model 256, vocab 32768):
2048 rows 780 MiB plain vs 433 MiB chunked; 8192 rows (8 × 1024 tokens) 3084 MiB vs 440 MiB. Every training
loss goes through it: llm/model.py's `lm_loss` (`Transformer.head_loss`), the pipeline's last stage
(parallel/pipeline.py), and, with the vocabulary-parallel chunk step of parallel/vocab_parallel_loss.py, tensor
parallelism. Only `forward()` (evaluation of logits, generation) still forms logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ROWS = 1024
"""Rows (batch·seq positions) per chunk: 1024 × a 4k vocabulary is 16 MiB of fp32 logits, × 128k is 512 MiB."""


def chunk_loss_and_grads(h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor, ignore_index: int,
                         inv_n_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk's (summed loss, d(mean loss)/dh, d(mean loss)/dweight in fp32), shapes fixed by the inputs'.

    No data-dependent shapes (ignored rows are masked, not gathered out), so `torch.compile` traces it whole:
    under `train.compile` (llm/train/compile.py) inductor fuses the log-softmax, the exp and the masking into
    one pass over the chunk's logits around the three matmuls.
    """
    # The matmul in the ambient autocast's dtype (as nn.Linear), the softmax in fp32 (as cross_entropy_loss).
    z = F.linear(h, weight)
    logits = z.float()
    valid = t != ignore_index
    safe_t = torch.where(valid, t, 0)[:, None]
    lse = torch.logsumexp(logits, -1)
    loss_sum = torch.where(valid, lse - logits.gather(1, safe_t).squeeze(1), 0.0).sum()
    # softmax − one-hot, scaled to d(mean loss)/d(logits), in place over the chunk's logits: one chunk-sized
    # buffer at a time. Ignored rows get no gradient.
    g = logits.sub_(lse[:, None]).exp_()
    g.scatter_add_(1, safe_t, torch.full_like(lse, -1.0)[:, None])
    g.mul_(torch.where(valid, inv_n_valid, 0.0)[:, None])
    g = g.to(z.dtype)
    return loss_sum, (g @ weight.to(z.dtype)).to(h.dtype), (g.T @ h.to(z.dtype)).float()


def matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype F.linear(hidden, weight) computes in: the ambient autocast's, else the weight's."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


class LinearCrossEntropy(torch.autograd.Function):
    """apply(hidden (rows, d), weight, targets (rows,), ignore_index, chunk_rows, step) → mean loss: `step` runs
    over the row chunks in the forward pass, and the backward pass only scales the gradients it returned. The
    plain step is `chunk_loss_and_grads`; tensor parallelism's is parallel/vocab_parallel_loss.py's."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows, step):
        n_valid = (targets != ignore_index).sum()
        inv_n_valid = 1.0 / n_valid.float()
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            loss_sum, gh, gw = step(hidden[rows], weight, targets[rows], ignore_index, inv_n_valid)
            total += loss_sum
            grad_h[rows] = gh
            grad_w += gw
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total * inv_n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                         chunk_rows: int = CHUNK_ROWS, step=chunk_loss_and_grads) -> torch.Tensor:
    """Mean cross-entropy of logits = hidden · weightᵀ (fp32 softmax) over targets != ignore_index.

    hidden: (..., d_model); weight: (vocab, d_model); targets: hidden's leading shape, int64. Equals
    `cross_entropy_loss(F.linear(hidden, weight), targets)` and its gradients to fp32 rounding (the sums run
    chunk by chunk) without ever holding more than chunk_rows rows of logits. NaN when no target is valid, as
    F.cross_entropy's mean. In fp16 (autocast, or fp16 weights as under DeepSpeed's fp16) it is the plain
    (unchunked) computation. `step` computes one chunk: `chunk_loss_and_grads` or a compiled twin of it.
    """
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if matmul_dtype(hidden, weight) == torch.float16:
        # fp16 needs the loss scale applied before the gradient is rounded to fp16 (small entries of
        # softmax − one-hot would underflow); the chunked path forms it in the forward pass, before the scale.
        return F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=ignore_index)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_rows, step)
    total = sum(F.cross_entropy(F.linear(hidden[s:s + chunk_rows], weight).float(), targets[s:s + chunk_rows],
                                ignore_index=ignore_index, reduction="sum")
                for s in range(0, hidden.shape[0], chunk_rows))
    return total / (targets != ignore_index).sum()
