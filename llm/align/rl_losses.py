"""Advantages and losses of the critic-free RL algorithms, as pure functions of tensors (llm/align/losses.py's
conventions: `mask` 1.0 on response tokens; per-token tensors (batch, T)).

- GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, §4.1, eq. 3): G samples per prompt, the advantage of
  every token of sample i the group-normalised outcome reward (r_i − mean(r)) / std(r); the clipped surrogate plus
  β·KL to the reference as a loss term, with the k3 estimator π_ref/π − log(π_ref/π) − 1 (their eq. 4); each
  sequence's token mean, then the mean over sequences.
- Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training", arXiv:2503.20783, §3.1): the same without the
  two normalisations that bias towards long wrong answers: no division by std(r), and token sums divided by a
  constant (the batch's sequences × max_new_tokens) instead of each sequence's length.
- RLOO (Ahmadian et al. 2024, "Back to basics", arXiv:2402.14740, §3.2): k samples per prompt, the baseline of
  sample i the mean reward of the other k − 1; the KL penalty is part of the sequence reward (r − β·KL_seq) and the
  loss is REINFORCE on the sequence's log-probability (the clipped ratio, which is REINFORCE on the first update).

The std is torch's unbiased one, plus 1e-4 (as TRL's GRPOTrainer), so a group of equal rewards gets advantage 0.
"""
from __future__ import annotations

import torch

from llm.align.losses import kl_penalty

STD_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """GRPO's (batch,) advantages from (prompts, G) rewards, rows being groups: r − group mean, divided by the
    group's std + STD_EPS when `scale` (GRPO), not divided (Dr. GRPO)."""
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale:
        centred = centred / (rewards.std(1, keepdim=True) + STD_EPS)
    return centred.reshape(-1)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO's (batch,) advantages from (prompts, k) rewards: r_i − mean_{j≠i} r_j. Needs k ≥ 2."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return (rewards - baseline).reshape(-1)


def clipped_token_terms(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, T) −min(ρ·A, clip(ρ, 1 ± ε)·A) with ρ = exp(logp − old_logp) and A = adv (batch,) on every token of
    its sequence, and the (batch, T) indicator of clipped ratios."""
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    terms = -torch.minimum(ratio * a, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * a)
    return terms, ((ratio - 1.0).abs() > clip_eps).float()


def aggregate(terms: torch.Tensor, mask: torch.Tensor, loss_type: str, n_sequences: float,
              max_new_tokens: int = 0) -> torch.Tensor:
    """The loss from per-token terms. n_sequences: the normaliser's count of sequences (a data-parallel caller
    passes the global mini-batch's count / world, llm/align/strategy.py).

    'seq_mean' (GRPO): Σ_i (Σ_t terms·mask / |o_i|) / n_sequences; 'seq_sum' (RLOO: REINFORCE on the sequence):
    Σ_i Σ_t terms·mask / n_sequences; 'constant' (Dr. GRPO): Σ terms·mask / (n_sequences · max_new_tokens).
    """
    per_seq = (terms * mask).sum(1)
    if loss_type == "seq_mean":
        return (per_seq / mask.sum(1).clamp(min=1.0)).sum() / n_sequences
    if loss_type == "seq_sum":
        return per_seq.sum() / n_sequences
    if loss_type == "constant":
        return per_seq.sum() / (n_sequences * max_new_tokens)
    raise ValueError(f"unknown loss aggregation {loss_type!r}")


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor,
              mask: torch.Tensor, clip_eps: float, beta: float, n_sequences: float, dr_grpo: bool = False,
              max_new_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's loss (the negated eq. 3 objective): clipped surrogate + β·k3 KL to the reference per token, aggregated
    per sequence ('seq_mean') or, with dr_grpo, over a constant ('constant'). Returns (loss, clip fraction)."""
    terms, clipped = clipped_token_terms(logp, old_logp, adv, clip_eps)
    if beta:
        terms = terms + beta * kl_penalty(logp, ref_logp, "k3")
    kind = "constant" if dr_grpo else "seq_mean"
    return aggregate(terms, mask, kind, n_sequences, max_new_tokens), \
        aggregate(clipped, mask, "seq_mean", n_sequences).detach()


def rloo_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip_eps: float,
              n_sequences: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO's loss: the clipped surrogate of the sequence (token sums), advantages from `rloo_advantages` of the
    KL-penalised rewards. Returns (loss, clip fraction)."""
    terms, clipped = clipped_token_terms(logp, old_logp, adv, clip_eps)
    return aggregate(terms, mask, "seq_sum", n_sequences), aggregate(clipped, mask, "seq_mean", n_sequences).detach()
