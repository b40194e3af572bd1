"""Losses and estimators of the alignment stages, as pure functions of tensors (no models, no state).

Conventions: `mask` tensors are 1.0 on the tokens that count (response tokens) and 0.0 elsewhere; per-token
tensors are (batch, T) with T the response length; sequence log-probabilities are sums over response tokens.

Sources: Ouyang et al. 2022 (InstructGPT, arXiv:2203.02155) for the SFT → RM → PPO chain and the
per-token KL penalty; Schulman et al. 2017 (PPO, arXiv:1707.06347) for the clipped surrogate; Schulman
et al. 2015 (GAE, arXiv:1506.02438); Ziegler et al. 2019 (arXiv:1909.08593) for the adaptive KL
controller; Rafailov et al. 2023 (DPO, arXiv:2305.18290).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


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


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                    clip_eps: float = 0.2, n_tokens: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), negated for minimisation, token mean over the mask.

    Returns (loss, clip fraction: share of tokens whose ratio left [1 − ε, 1 + ε]); n_tokens: the normaliser of
    both, see `masked_mean`.
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask, n_tokens)
    clip_frac = masked_mean(((ratio - 1.0).abs() > clip_eps).float(), mask, n_tokens)
    return loss, clip_frac.detach()


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
