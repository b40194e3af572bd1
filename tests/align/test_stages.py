"""The seams of the alignment chain: the stage registry, the optimizer sections, the input
check of the chain, and the runtimes (llm/train/runtime.py, parallel/runtime.py)."""
import pytest
import torch

from llm.align.config import STAGES, load_align_config
from llm.align.handoff import HandoffError
from llm.align.stages import REGISTRY
from llm.config import ConfigError, ModelConfig, OptimConfig
from llm.model import Transformer
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"


def test_registry_names_the_config_stages_and_reads_only_earlier_ones():
    assert tuple(REGISTRY) == STAGES
    for i, stage in enumerate(REGISTRY.values()):
        assert stage.name == STAGES[i]
        for default in stage.checkpoints.values():
            assert STAGES.index(default) < i, (stage.name, default)
    # The summary the chain reported before the stages declared their keys.
    assert {s.name: list(s.summary_keys) for s in REGISTRY.values()} == {
        "base": ["checker_accuracy"], "sft": ["checker_accuracy", "eval_loss"], "rm": ["pairwise_accuracy"],
        "ppo": ["checker_accuracy", "kl", "rm_reward", "rm_reward_correct", "rm_reward_wrong", "rm_checker_agreement"],
        "dpo": ["checker_accuracy", "kl"], "grpo_rloo": ["checker_accuracy", "eval_reward", "kl", "response_length"]}


def test_every_stage_optimizer_is_an_optim_config_with_the_stages_defaults():
    cfg = load_align_config(RECIPE)
    # The values the alignment trainer used before (betas and eps were hard-coded to these).
    assert cfg.sft.optim == OptimConfig(lr=3e-3, warmup_steps=10, weight_decay=0.0, min_lr_ratio=0.1, grad_clip=1.0,
                                        beta1=0.9, beta2=0.95, eps=1e-8, fused=False)
    assert cfg.ppo.actor_optim == OptimConfig(lr=5e-4, warmup_steps=0, weight_decay=0.0, min_lr_ratio=1.0,
                                              fused=False)
    # A section given in part is completed from the stage's defaults, not from pretraining's (warmup 10, decay 0.1).
    partial = load_align_config(None, ["dpo.optim.lr=1e-3", "rm.optim.beta2=0.99"])
    assert partial.dpo.optim == OptimConfig(lr=1e-3, warmup_steps=0, weight_decay=0.0, fused=False)
    assert partial.rm.optim == OptimConfig(lr=1e-3, warmup_steps=10, weight_decay=0.0, beta2=0.99, fused=False)
    with pytest.raises(ConfigError, match="rm.optim.beta1=1.5 must be in"):
        load_align_config(None, ["rm.optim.beta1=1.5"])


def test_zero_stage_is_a_stage_setting_and_the_old_key_names_the_new_one():
    cfg = load_align_config(RECIPE, ["sft.zero_stage=2", "ppo.actor_zero_stage=1", "ppo.critic_zero_stage=2"])
    assert (cfg.sft.zero_stage, cfg.ppo.actor_zero_stage, cfg.ppo.critic_zero_stage, cfg.dpo.zero_stage) == (2, 1, 2, 0)
    for old, new in [("sft.optim", "sft.zero_stage"), ("ppo.actor_optim", "ppo.actor_zero_stage"),
                     ("ppo.critic_optim", "ppo.critic_zero_stage"), ("dpo.optim", "dpo.zero_stage")]:
        with pytest.raises(ConfigError, match=f"{old}.zero_stage moved to {new} "):
            load_align_config(RECIPE, [f"{old}.zero_stage=1"])
    with pytest.raises(ConfigError, match="rm.zero_stage=3 must be 0, 1 or 2"):
        load_align_config(None, ["rm.zero_stage=3"])


def test_chain_refuses_a_missing_input_before_running_anything(tmp_path):
    from llm.align.chain import check_inputs, run_chain
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", "stages=[sft,rm]"])
    with pytest.raises(HandoffError,
                       match=fr"stage sft reads {tmp_path}/base \(sft.init\), which does not exist; no earlier"):
        run_chain(cfg)
    assert list(tmp_path.iterdir()) == []
    # Inputs written by an earlier stage of the run are fine: base writes the data and <out_dir>/base.
    check_inputs(cfg, [REGISTRY[s] for s in ("base", "sft", "rm", "ppo", "dpo")])
    other = load_align_config(RECIPE, [f"out_dir={tmp_path}", f"ppo.reward_model={tmp_path}/elsewhere"])
    with pytest.raises(HandoffError, match=r"stage ppo reads .*/elsewhere \(ppo.reward_model\)"):
        check_inputs(other, [REGISTRY[s] for s in ("base", "sft", "rm", "ppo")])
    # One stage run by itself (launch/ppo.py ...): nothing earlier will write it, and the message says so.
    with pytest.raises(HandoffError, match=r"\(ppo.actor\), which does not exist; run the stage that writes it "
                                           r"first, or set ppo.actor to a complete stage checkpoint"):
        check_inputs(other, [REGISTRY["ppo"]], alone=True)


def test_single_process_trains_with_the_configured_adamw():
    from llm.train.runtime import SingleProcess, Trainer

    mcfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32, vocab_size=24, seq_len=8)
    optim = OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.1, min_lr_ratio=1.0, beta1=0.8, beta2=0.5, eps=1e-6,
                        grad_clip=0.0)
    model, ref = Transformer(mcfg, seed=1), Transformer(mcfg, seed=1)
    trainer = Trainer(SingleProcess().prepare(model, optim, zero_stage=2), optim, total_steps=3)
    decay = [p for p in ref.parameters() if p.ndim >= 2]
    rest = [p for p in ref.parameters() if p.ndim < 2]
    adam = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.8, 0.5), eps=1e-6, fused=optim.fused)
    tokens = torch.randint(0, 24, (4, 8), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        trainer.step(trainer(tokens).float().logsumexp(-1).mean())
        ref(tokens).float().logsumexp(-1).mean().backward()
        adam.step()
        adam.zero_grad()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert trainer.module is model


def test_runtime_choice_and_deepspeed_json():
    from launch.align_common import make_runtime
    from llm.train.runtime import SingleProcess
    from parallel.runtime import model_ds_config

    assert isinstance(make_runtime(), SingleProcess)  # plain python: debug mode, no process group
    ds = model_ds_config(OptimConfig(lr=5e-4, beta2=0.99, grad_clip=0.5), zero_stage=2, world=4)
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.99] and ds["gradient_clipping"] == 0.5
    batch = (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"])
    assert batch == (4, 1, 1)
