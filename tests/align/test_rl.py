"""GRPO / Dr. GRPO / RLOO advantages and losses (llm/align/losses.py) on hand-computed cases, and the reward
functions of llm/align/reward_functions.py (path and module forms, weights, every error named)."""
import math

import pytest
import torch

from llm.align import losses as L
from llm.align.reward_functions import RewardError, RewardFunctions, load_function

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

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


def test_reward_functions_path_and_module_forms(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def length(prompts, completions, **fields):\n    return [float(len(c)) for c in completions]\n"
                 "def exact(prompts, completions, answer, **fields):\n"
                 "    return [float(c == a) for c, a in zip(completions, answer)]\n"
                 "NOT_CALLABLE = 3\n"
                 "def bad_len(prompts, completions, **fields):\n    return [1.0]\n"
                 "def boom(prompts, completions, **fields):\n    raise KeyError('answer')\n"
                 "def nan(prompts, completions, **fields):\n    return [float('nan')] * len(completions)\n")
    fields = [{"answer": "12"}, {"answer": "34"}]
    both = RewardFunctions([f"{f}:length", f"{f}:exact"], [0.5, 2.0])
    assert both(["21", "43"], ["12", "3"], fields) == [0.5 * 2 + 2.0, 0.5 * 1]
    sort = RewardFunctions(["llm.align.task:sort_reward"])
    assert sort(["5183", [{"role": "user", "content": "21"}]], ["1358", "21"], [{}, {}]) == [1.0, 0.0]
    for spec, match in [("nocolon", "give 'path/to/file.py:function'"), (f"{tmp_path}/absent.py:fn", "no file"),
                        ("no_such_module_x:fn", "cannot import module 'no_such_module_x'"),
                        (f"{f}:missing", "has no attribute 'missing'"), (f"{f}:NOT_CALLABLE", "is not callable")]:
        with pytest.raises(RewardError, match=match):
            load_function(spec)
    (tmp_path / "broken.py").write_text("import no_such_module_y\n")
    with pytest.raises(RewardError, match="importing .*broken.py failed: ModuleNotFoundError"):
        load_function(f"{tmp_path}/broken.py:fn")
    for name, match in [("bad_len", "must return a list of 2 floats, got list of 1"),
                        ("boom", "raised KeyError"), ("nan", "returned nan for completion 0")]:
        with pytest.raises(RewardError, match=match):
            RewardFunctions([f"{f}:{name}"])(["a", "b"], ["x", "y"], fields)
    with pytest.raises(RewardError, match="1 reward weights for 2 rewards"):
        RewardFunctions([f"{f}:length", f"{f}:exact"], [1.0])
