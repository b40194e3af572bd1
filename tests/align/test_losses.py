"""Losses, GAE, the KL controller and the GRPO / Dr. GRPO / RLOO advantages and losses (llm/align/losses.py) against
small cases computed by hand."""
import math

import pytest
import torch

from llm.align import losses as L

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_sft_loss_ignores_prompt_and_padding():
    # Uniform logits over 4 tokens: every counted position costs log 4; ignored ones cost nothing.
    logits = torch.zeros(1, 5, 4)
    targets = torch.tensor([[L.IGNORE_INDEX, L.IGNORE_INDEX, 2, 3, L.IGNORE_INDEX]])
    assert L.sft_loss(logits, targets).item() == pytest.approx(math.log(4))
    # A confident wrong prediction on a prompt position must not change the loss.
    logits[0, 0, 1] = 50.0
    assert L.sft_loss(logits, targets).item() == pytest.approx(math.log(4))
    # The data-parallel normaliser: the sum over 2 tokens divided by the given count.
    assert L.sft_loss(logits, targets, n_tokens=4.0).item() == pytest.approx(2 * math.log(4) / 4)


def test_bradley_terry_by_hand():
    rc, rr = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert L.bradley_terry_loss(rc, rr).item() == pytest.approx(expected)
    with_margin = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(1.5)))) / 2
    assert L.bradley_terry_loss(rc, rr, margin=0.5).item() == pytest.approx(with_margin)


def test_dpo_by_hand():
    loss, margin = L.dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                              beta=0.5)
    # beta·((−1+2) − (−3+2)) = 0.5·2 = 1
    assert margin.item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)))
    # Policy equal to the reference: loss log 2 whatever the data.
    loss, _ = L.dpo_loss(torch.tensor([-4.0]), torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-1.0]), 0.1)
    assert loss.item() == pytest.approx(math.log(2))


def test_gae_by_hand():
    # One episode of 3 tokens, then padding. gamma=0.9, lam=0.8.
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    v = torch.tensor([[0.5, 0.2, 0.4, 9.0]])  # the padded value 9 must be ignored
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = L.gae(r, v, m, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.4
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4, 0.0])


def test_gae_lambda_one_gamma_one_is_monte_carlo():
    r = torch.tensor([[0.1, -0.2, 1.0]])
    v = torch.tensor([[0.3, 0.1, 0.7]])
    adv, ret = L.gae(r, v, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([0.9, 0.8, 1.0])


def test_ppo_policy_loss_clipping_by_hand():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    loss, clip_frac = L.ppo_policy_loss(logp, old, adv, torch.ones(1, 3), clip_eps=0.2)
    # min(1.5·1, 1.2·1) = 1.2; min(0.5·1, 0.8·1) = 0.5; min(1.1·−2, 1.1·−2) = −2.2
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 2.2) / 3)
    assert clip_frac.item() == pytest.approx(2 / 3)


def test_ppo_policy_gradient_vanishes_when_clipped():
    logp = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _ = L.ppo_policy_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    loss.backward()
    assert logp.grad.item() == 0.0


def test_ppo_value_loss_by_hand():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.3]])
    # token 0: unclipped (1−2)² = 1, clipped v=0.7 → (0.7−2)² = 1.69 → max 1.69; token 1: 0.09 both.
    loss = L.ppo_value_loss(v, old, ret, torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)


def test_whiten_and_kl_estimators():
    x, m = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = L.whiten(x, m)
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert (w[0, :3] ** 2).mean().item() == pytest.approx(1.0, rel=1e-5)
    assert w[0, 3].item() == 0.0
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert L.kl_penalty(lp, ref, "k1").item() == pytest.approx(0.5)
    assert L.kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)
    assert L.kl_penalty(lp, lp, "k3").item() == 0.0


def test_entropy_uniform():
    assert L.entropy(torch.zeros(2, 3, 8), torch.ones(2, 3)).item() == pytest.approx(math.log(8))


def test_adaptive_kl_controller_by_hand():
    c = L.AdaptiveKLController(0.1, target=6.0, horizon=100)
    # KL 12 → error clipped to +0.2; 10 steps → β·(1 + 0.2·0.1)
    assert c.update(12.0, 10) == pytest.approx(0.1 * 1.02)
    assert c.update(6.0 * 0.95, 10) == pytest.approx(0.1 * 1.02 * (1 - 0.05 * 0.1))
    fixed = L.AdaptiveKLController(0.3)
    assert fixed.update(100.0, 10) == 0.3


# GRPO / Dr. GRPO / RLOO advantages and losses.
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def test_group_advantages_grpo_and_dr_grpo():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of {1, 0, 0, 1}
    a = 0.5 / (std + L.STD_EPS)
    assert torch.allclose(L.group_advantages(r), torch.tensor([a, -a, -a, a, 0, 0, 0, 0]))
    assert torch.equal(L.group_advantages(r, scale=False), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))


def test_rloo_leave_one_out_baseline():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 5.0, 7.0]])
    # 1 − (0+0+1)/3, 0 − (1+0+1)/3; 3 − 13/3, 1 − 15/3, 5 − 11/3, 7 − 9/3
    want = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 3 - 13 / 3, 1 - 5, 5 - 11 / 3, 7 - 3])
    assert torch.allclose(L.rloo_advantages(r), want)
    with pytest.raises(ValueError, match="at least 2"):
        L.rloo_advantages(torch.ones(3, 1))


def test_grpo_loss_hand_computed():
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    adv = torch.tensor([1.0, 0.5])
    # Ratio 1: each token's term is −A; GRPO averages per sequence, then over the 2 sequences.
    loss, clip = L.grpo_loss(logp, logp.detach(), logp.detach(), adv, MASK, 0.2, 0.0, n_sequences=2)
    assert math.isclose(float(loss.detach()), (-1.0 - 0.5) / 2, rel_tol=1e-6) and float(clip) == 0.0
    loss.backward()
    want = torch.tensor([[-1 / 2 / 2, -1 / 2 / 2, 0.0], [-0.5 / 3 / 2] * 3])
    assert torch.allclose(logp.grad, want)
    # Dr. GRPO: token sums over sequences × max_new_tokens: (−2·1 − 3·0.5) / (2·3).
    loss, _ = L.grpo_loss(logp, logp.detach(), logp.detach(), adv, MASK, 0.2, 0.0, 2, dr_grpo=True,
                           max_new_tokens=3)
    assert math.isclose(float(loss.detach()), -3.5 / 6, rel_tol=1e-6)
    # The KL term, k3 = π_ref/π − log(π_ref/π) − 1 per token, here log π − log π_ref = 0.1 everywhere and A = 0.
    ref = logp.detach() - 0.1
    loss, _ = L.grpo_loss(logp, logp.detach(), ref, torch.zeros(2), MASK, 0.2, 0.5, 2)
    assert math.isclose(float(loss.detach()), 0.5 * (math.exp(-0.1) - 1 + 0.1), rel_tol=1e-5)


def test_clipped_terms_are_pessimistic():
    old = torch.zeros(2, 1)
    logp = torch.full((2, 1), 0.5)  # ratio e^0.5 ≈ 1.649, outside 1 ± 0.2
    terms, clipped = L.clipped_token_terms(logp, old, torch.tensor([1.0, -1.0]), 0.2)
    assert torch.allclose(terms, torch.tensor([[-1.2], [math.exp(0.5)]]))  # min(ρA, clip(ρ)A), negated
    assert torch.equal(clipped, torch.ones(2, 1))


def test_rloo_loss_is_reinforce_on_the_sequence():
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    adv = torch.tensor([1.0, 0.5])
    loss, _ = L.rloo_loss(logp, logp.detach(), adv, MASK, 0.2, n_sequences=2)
    assert math.isclose(float(loss.detach()), -(2 * 1.0 + 3 * 0.5) / 2, rel_tol=1e-6)
    loss.backward()
    # REINFORCE: ∂/∂ log π(o_i,t) = −A_i / n on every response token.
    assert torch.allclose(logp.grad, -adv[:, None] / 2 * MASK)
