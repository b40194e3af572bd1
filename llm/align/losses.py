"""Losses and estimators of every alignment method, as pure functions of tensors (no models, no state).

Conventions: `mask` tensors are 1.0 on the tokens that count (response tokens) and 0.0 elsewhere; per-token
tensors are (batch, T) with T the response length; sequence log-probabilities are sums over response tokens.

The clipped surrogate is written once (`clipped_token_terms`) and reduced by `aggregate` (OpenRLHF's PolicyLoss):
PPO takes the token mean, GRPO each sequence's token mean, Dr. GRPO token sums over a constant, RLOO sequence sums.

Sources: Ouyang et al. 2022 (InstructGPT, arXiv:2203.02155) for the SFT → RM → PPO chain and the
per-token KL penalty; Schulman et al. 2017 (PPO, arXiv:1707.06347) for the clipped surrogate; Schulman
et al. 2015 (GAE, arXiv:1506.02438); Ziegler et al. 2019 (arXiv:1909.08593) for the adaptive KL
controller; Rafailov et al. 2023 (DPO, arXiv:2305.18290). The critic-free methods:
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
The group std is torch's unbiased one, plus STD_EPS = 1e-4 (as TRL's GRPOTrainer), so a group of equal rewards
gets advantage 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
STD_EPS = 1e-4
"""Added to a group's reward std (GRPO's advantages), as TRL's GRPOTrainer."""


def masked_mean(x: torch.Tensor, mask: torch.Tensor, denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """sum(x·mask) / denom; denom defaults to sum(mask). A data-parallel caller passes the global token count
    (divided by the world size) so that the engine's gradient averaging gives the global token mean."""
    denom = mask.sum() if denom is None else denom
    return (x * mask).sum() / denom


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets) per position from (batch, T, vocab) logits, in fp32; IGNORE_INDEX targets give 0."""
    safe = targets.clamp(min=0)
    lp = torch.gather(F.log_softmax(logits.float(), dim=-1), -1, safe[..., None]).squeeze(-1)
    return lp.masked_fill(targets == IGNORE_INDEX, 0.0)


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, n_tokens: float | None = None) -> torch.Tensor:
    """Next-token cross-entropy over the response tokens only (prompt and padding targets are IGNORE_INDEX).

    n_tokens: normaliser (defaults to the count of non-ignored targets here), see `masked_mean`.
    """
    mask = (targets != IGNORE_INDEX).float()
    return masked_mean(-token_logprobs(logits, targets), mask, n_tokens)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
                       ) -> torch.Tensor:
    """Mean of −log σ(r_chosen − r_rejected − margin) (InstructGPT eq. 1; the margin as in Llama 2, §3.2.2)."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023, eq. 7) from sequence log-probs of policy and reference.

    Returns (mean loss, per-pair implicit reward margin β·(Δ_chosen − Δ_rejected)).
    """
    logits = beta * ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected))
    return -F.logsigmoid(logits).mean(), logits.detach()


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from log-probs of the sampled tokens (samples drawn from π).

    k1 = log π − log π_ref (unbiased, InstructGPT's penalty); k3 = (r − 1) − log r with r = π_ref/π
    (unbiased and non-negative; Schulman's "Approximating KL divergence" note).
    """
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"unknown KL estimator {kind!r}; use 'k1' or 'k3'")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, eq. 16) over right-padded responses.

    rewards, values, mask: (batch, T); the value after a response's last token is 0 (the episode ends).
    Returns (advantages, returns = advantages + values), both 0 where mask is 0.
    """
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise x to unit variance (and zero mean if shift_mean) over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return (out if shift_mean else out + mean) * mask


def clipped_token_terms(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate (Schulman et al. 2017, eq. 7), negated for minimisation, per token: (batch, T)
    −min(ρ·A, clip(ρ, 1 ± ε)·A) with ρ = exp(logp − old_logp), and the (batch, T) indicator of ratios outside
    [1 − ε, 1 + ε]. adv: per token (batch, T) (PPO's GAE), or per sequence (batch,), then on every token of it."""
    ratio = torch.exp(logp - old_logp)
    a = adv if adv.dim() == ratio.dim() else adv[:, None]
    terms = -torch.minimum(ratio * a, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * a)
    return terms, ((ratio - 1.0).abs() > clip_eps).float()


def aggregate(terms: torch.Tensor, mask: torch.Tensor, loss_type: str, n: float | None = None,
              max_new_tokens: int = 0) -> torch.Tensor:
    """The loss from per-token terms. n: the normaliser's count, of tokens for 'token_mean' (default: here, see
    `masked_mean`), of sequences otherwise (a data-parallel caller passes the global mini-batch's count / world,
    llm/train/runtime.py).

    'token_mean' (PPO): Σ terms·mask / n_tokens; 'seq_mean' (GRPO): Σ_i (Σ_t terms·mask / |o_i|) / n_sequences;
    'seq_sum' (RLOO: REINFORCE on the sequence): Σ_i Σ_t terms·mask / n_sequences; 'constant' (Dr. GRPO):
    Σ terms·mask / (n_sequences · max_new_tokens).
    """
    if loss_type == "token_mean":
        return masked_mean(terms, mask, n)
    per_seq = (terms * mask).sum(1)
    if loss_type == "seq_mean":
        return (per_seq / mask.sum(1).clamp(min=1.0)).sum() / n
    if loss_type == "seq_sum":
        return per_seq.sum() / n
    if loss_type == "constant":
        return per_seq.sum() / (n * max_new_tokens)
    raise ValueError(f"unknown loss aggregation {loss_type!r}")


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                    clip_eps: float = 0.2, n_tokens: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, token mean over the mask. Returns (loss, clip fraction: share of tokens whose ratio
    left [1 − ε, 1 + ε]); n_tokens: the normaliser of both, see `masked_mean`."""
    terms, clipped = clipped_token_terms(logp, old_logp, adv, clip_eps)
    return aggregate(terms, mask, "token_mean", n_tokens), aggregate(clipped, mask, "token_mean", n_tokens).detach()


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2, n_tokens: float | None = None) -> torch.Tensor:
    """Clipped value loss ½·max((V − R)², (clip(V, V_old ± c) − R)²), token mean (as in OpenAI baselines' PPO2)."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask, n_tokens)


def entropy(logits: torch.Tensor, mask: torch.Tensor, n_tokens: float | None = None) -> torch.Tensor:
    """Mean per-token entropy of the (batch, T, vocab) distributions over the mask."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask, n_tokens)


class AdaptiveKLController:
    """Ziegler et al. 2019 (arXiv:1909.08593, §2.2): β ← β·(1 + K_β·e), e = clip(KL/target − 1, ±0.2),
    with K_β = n_steps/horizon; it steers the measured KL towards `target` (nats per sequence)."""

    def __init__(self, beta: float, target: float | None = None, horizon: int = 10000):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1.0))
            self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


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
