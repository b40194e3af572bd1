"""The bundled default chain (configs/align/default.yaml, seed 0) on CPU, its improvements, and the controls.

Margins. Accuracies are measured on 256 held-out prompts, so one accuracy has a standard error of at most
sqrt(0.25/256) ≈ 0.031 and a difference of two ≈ 0.044. Seeded runs gave base 0.00, SFT 0.47, PPO 0.71 (KL 1.0
nats; PPO 0.71–0.81 over seeds 0–4), RM held-out pairwise accuracy 0.97. The asserted margins sit well inside
those (SFT − base ≥ 0.2, PPO − SFT ≥ 0.1, RM ≥ 0.8 against chance 0.5, KL ≤ 5 nats) and well outside noise
(0.1 is over 2σ of a difference), so a broken stage fails and a different machine's float rounding does not.
Since the base's pretraining draws from a seed stream of its own (llm/align/seeds.py), seed 0 gives base 0.004,
SFT 0.52, RM 0.98, PPO 0.87 (KL 0.94), GRPO 0.91 (KL 0.47): inside the same margins, none changed.
The controls assert the absence of a gain with the same 0.1: a shuffled-label RM (chance accuracy) and a β of
50.
"""
import json

import pytest
import torch

from llm.align import handoff
from llm.align.config import load_align_config
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from llm.align.chain import run_chain
    out = tmp_path_factory.mktemp("align")
    cfg = load_align_config(RECIPE, [f"out_dir={out}", "stages=[base,sft,rm,ppo,dpo,grpo_rloo]"])
    torch.set_num_threads(1)
    report = run_chain(cfg)
    return cfg, report


def _control(cfg, tmp_path, overrides):
    """A config sharing the main chain's data, base and SFT checkpoints (symlinked), with overrides."""
    for name in ("data", "base", "sft"):
        (tmp_path / name).symlink_to(f"{cfg.out_dir}/{name}")
    return load_align_config(RECIPE, [f"out_dir={tmp_path}", *overrides])


def test_report_and_improvements(chain):
    cfg, report = chain
    s = json.loads((handoff.Path(cfg.out_dir) / "chain_report.json").read_text())["summary"]
    for key in ("base.checker_accuracy", "sft.checker_accuracy", "rm.pairwise_accuracy", "ppo.checker_accuracy",
                "ppo.kl", "dpo.checker_accuracy", "dpo.kl", "ppo.rm_reward", "ppo.rm_reward_wrong"):
        assert s[key] is not None, key
    assert s["sft.checker_accuracy"] - s["base.checker_accuracy"] >= 0.2, s
    assert s["rm.pairwise_accuracy"] >= 0.8, s
    assert s["ppo.checker_accuracy"] - s["sft.checker_accuracy"] >= 0.1, s
    assert 0.0 <= s["ppo.kl"] <= 5.0, s


def test_grpo_gains_over_sft_without_a_critic_or_rm(chain):
    # Seed 0 measured GRPO 0.875 (KL 0.56 nats, 4.7 s) against PPO 0.71 (KL 0.96, 16.1 s plus the RM's 14.1 s).
    _, report = chain
    s = report["summary"]
    assert s["grpo_rloo.checker_accuracy"] - s["sft.checker_accuracy"] >= 0.1, s
    assert s["grpo_rloo.eval_reward"] == s["grpo_rloo.checker_accuracy"]  # the checker as a 0/1 reward function
    assert 0.0 <= s["grpo_rloo.kl"] <= 5.0 and 1.0 <= s["grpo_rloo.response_length"] <= 8.0, s
    for stage in ("base", "sft", "ppo", "dpo", "grpo_rloo"):
        assert s[f"{stage}.eval_reward"] == report["stages"][stage]["checker_accuracy"], stage


def test_ppo_step0_reference_equals_actor(chain):
    _, report = chain
    assert report["stages"]["ppo"]["step0_ref_logp_max_abs_diff"] == 0.0


def test_critic_gets_the_reward_models_head(chain):
    from llm.align.ppo import build_models
    cfg, _ = chain
    m = build_models(cfg)
    rm_state = torch.load(f"{cfg.out_dir}/rm/model.pt", weights_only=True)
    for k, v in m.critic.state_dict().items():
        assert torch.equal(v, rm_state[k]), k
    # Not merely a fresh head that happens to look alike: the RM's trained head differs from an initialised one.
    from llm.model import RewardModel
    assert not torch.equal(RewardModel(m.critic.cfg).v_head.weight, m.critic.v_head.weight)


def test_chain_skips_finished_stages(chain):
    from llm.align.chain import run_chain
    cfg, report = chain
    again = run_chain(cfg)
    assert again["skipped"] == cfg.stages
    assert again["summary"]["ppo.checker_accuracy"] == report["summary"]["ppo.checker_accuracy"]


def test_shuffled_label_rm_gives_no_ppo_gain(chain, tmp_path):
    from llm.align.ppo import run_ppo
    from llm.align.reward_training import run_rm
    cfg, report = chain
    ctrl = _control(cfg, tmp_path, ["rm.shuffle_labels=true"])
    rm = run_rm(ctrl)
    assert rm["pairwise_accuracy"] < 0.7, rm
    ppo = run_ppo(ctrl)
    sft_acc = report["summary"]["sft.checker_accuracy"]
    assert ppo["checker_accuracy"] - sft_acc < 0.1, (ppo, sft_acc)


def test_huge_beta_keeps_policy_at_sft(chain, tmp_path):
    from llm.align.ppo import run_ppo
    cfg, report = chain
    (tmp_path / "rm").symlink_to(f"{cfg.out_dir}/rm")
    ctrl = _control(cfg, tmp_path, ["ppo.beta=50", "ppo.iterations=20"])
    ppo = run_ppo(ctrl)
    assert abs(ppo["checker_accuracy"] - report["summary"]["sft.checker_accuracy"]) < 0.1, ppo
    assert ppo["kl"] < 0.5, ppo


def test_handoff_refuses_a_different_tokenizer(chain, tmp_path):
    from llm.align.ppo import build_models
    from llm.align.task import train_task_tokenizer
    cfg, _ = chain
    # An RM copy whose recorded tokenizer differs (trained on other text) must be refused by PPO.
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "abc xyz: 123"}\n' * 20)
    tok = train_task_tokenizer(other, tmp_path / "other_tok")
    rm2 = tmp_path / "rm2"
    model, _ = handoff.load_stage(f"{cfg.out_dir}/rm", "reward")
    handoff.save_stage(rm2, "rm", model, tok, extra={"reward_mean": 0.0, "reward_std": 1.0})
    bad = load_align_config(RECIPE, [f"out_dir={cfg.out_dir}", f"ppo.reward_model={rm2}"])
    with pytest.raises(handoff.HandoffError, match="tokenizer mismatch"):
        build_models(bad)
