"""The config sections of the RL stages (llm/align/config.py): PPO (`ppo`, llm/align/ppo.py) and the critic-free
`rl` stage (GRPO or RLOO, llm/align/rl.py), each field documented with its unit and constraint and checked by the
section's own `validate`. No torch here."""
from __future__ import annotations

from dataclasses import dataclass, field

from llm.align.sections import (INF, NON_NEGATIVE, ONE_OR_MORE, OPEN_UNIT, POSITIVE, SAMPLED, _optim, check_range,
                                check_trained, check_weights)
from llm.config import ConfigError, OptimConfig


@dataclass
class PPOConfig:
    actor: str | None = None
    """Actor and frozen reference; defaults to <out_dir>/sft."""
    reward_model: str | None = None
    """Frozen RM and the critic's initialisation; defaults to <out_dir>/rm."""
    prompts: str | None = None
    """Rollout prompts {"prompt": ... or "messages": [...], other fields}, as sft.data; null: the bundled
    sft_train.jsonl's prompts."""
    iterations: int = 40
    rollout_batch: int = 64
    ppo_epochs: int = 4
    mini_batch: int = 32
    max_new_tokens: int = 8
    temperature: float = 1.0
    beta: float = 0.1
    """KL penalty coefficient (initial value when kl_target is set)."""
    kl_target: float | None = None
    """Adaptive controller target in nats per sequence (Ziegler et al. 2019); null keeps β fixed."""
    kl_horizon: int = 10000
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip: float = 0.2
    reward_clip: float = 5.0
    """Clip the normalised RM score to ±this."""
    whiten_advantages: bool = True
    ema: float = 0.0
    """EMA decay of an actor copy (e.g. 0.99); evaluated in place of the actor when > 0."""
    actor_optim: OptimConfig = field(default_factory=lambda: _optim(lr=5e-4, min_lr_ratio=1.0))
    critic_optim: OptimConfig = field(default_factory=lambda: _optim(lr=1e-3, min_lr_ratio=1.0))
    actor_zero_stage: int = 0
    """As sft.zero_stage, for the actor's engine..."""
    critic_zero_stage: int = 0
    """...and the critic's (the reference and the reward model are frozen: no engine)."""
    checkpoint_every: int = 10
    """As sft.checkpoint_every, in iterations."""

    def validate(self, where: str = "ppo") -> None:
        check_trained(self, where, ("actor_optim", "critic_optim"), ("actor_zero_stage", "critic_zero_stage"))
        for key in ("iterations", "rollout_batch", "ppo_epochs", "mini_batch", "max_new_tokens"):
            check_range(f"{where}.{key}", getattr(self, key), *ONE_OR_MORE)
        check_range(f"{where}.temperature", self.temperature, *POSITIVE, SAMPLED)
        check_range(f"{where}.beta", self.beta, *NON_NEGATIVE, "the KL penalty; 0: none")
        check_range(f"{where}.kl_horizon", self.kl_horizon, *ONE_OR_MORE, "the adaptive controller's horizon in sequences")
        check_range(f"{where}.gamma", self.gamma, (0, False), (1, False))
        check_range(f"{where}.lam", self.lam, (0, False), (1, False))
        check_range(f"{where}.clip_eps", self.clip_eps, *OPEN_UNIT)
        check_range(f"{where}.value_clip", self.value_clip, *POSITIVE)
        check_range(f"{where}.reward_clip", self.reward_clip, *POSITIVE)
        check_range(f"{where}.ema", self.ema, (0, False), (1, True), "0: off")
        if self.kl_target is not None:
            check_range(f"{where}.kl_target", self.kl_target, *POSITIVE, "nats per sequence; null keeps β fixed")
        if self.rollout_batch % self.mini_batch != 0:
            raise ConfigError(f"{where}.mini_batch={self.mini_batch} does not divide {where}.rollout_batch="
                              f"{self.rollout_batch}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"{where}.kl_estimator={self.kl_estimator!r} must be 'k1' or 'k3'")


@dataclass
class RLConfig:
    """The critic-free RL stage `rl` (llm/align/rl.py): GRPO or RLOO from the SFT policy, rewarded by functions
    and/or the RM."""

    algorithm: str = "grpo"
    """'grpo' (Shao et al. 2024) or 'rloo' (Ahmadian et al. 2024). PPO (critic, GAE) is the `ppo` stage."""
    actor: str | None = None
    """Policy and frozen reference; defaults to <out_dir>/sft."""
    reward_model: str | None = None
    """The RM, read only when `reward` lists 'rm'; defaults to <out_dir>/rm."""
    prompts: str | None = None
    """Rollout prompts, as ppo.prompts (extra fields go to the reward functions); null: the bundled sft_train."""
    reward: list[str] = field(default_factory=lambda: ["llm.align.task:sort_reward"])
    """Reward functions `path/file.py:fn` or `package.module:fn` (llm/align/reward_functions.py) and/or 'rm' (the RM's
    score normalised by its mean/std, an unfinished answer scored -ppo.reward_clip), summed with reward_weights."""
    reward_weights: list[float] | None = None
    """One weight per `reward` entry; null: all 1."""
    loss_type: str = "grpo"
    """GRPO's aggregation: 'grpo' (std-normalised advantages, per-sequence token mean) or 'dr_grpo' (Liu et al.
    2025: neither normalisation, token sums over a constant)."""
    iterations: int = 40
    prompts_per_iteration: int = 16
    group_size: int = 4
    """Samples per prompt (GRPO's G, RLOO's k >= 2): a rollout is prompts_per_iteration × group_size sequences."""
    epochs: int = 2
    """Passes over each rollout."""
    mini_batch: int = 32
    """Sequences per update; divides the rollout."""
    max_new_tokens: int = 8
    temperature: float = 1.0
    beta: float = 0.04
    """KL coefficient: GRPO's loss term (DeepSeekMath §4.2 uses 0.04), RLOO's sequence-reward penalty."""
    clip_eps: float = 0.2
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=5e-4, min_lr_ratio=1.0))
    zero_stage: int = 0
    """As sft.zero_stage."""
    checkpoint_every: int = 10
    """As sft.checkpoint_every, in iterations."""

    def validate(self, where: str = "rl") -> None:
        check_trained(self, where)
        for key in ("iterations", "prompts_per_iteration"):
            check_range(f"{where}.{key}", getattr(self, key), *ONE_OR_MORE)
        check_range(f"{where}.group_size", self.group_size, (2, False), (INF, True),
                    "group baselines need two samples per prompt")
        for key in ("epochs", "mini_batch", "max_new_tokens"):
            check_range(f"{where}.{key}", getattr(self, key), *ONE_OR_MORE)
        check_range(f"{where}.temperature", self.temperature, *POSITIVE, SAMPLED)
        check_range(f"{where}.beta", self.beta, *NON_NEGATIVE, "the KL coefficient; 0: none")
        check_range(f"{where}.clip_eps", self.clip_eps, *OPEN_UNIT)
        check_weights(where, self.reward, self.reward_weights)
        if self.algorithm not in ("grpo", "rloo"):
            hint = "; PPO is the `ppo` stage (stages: [..., ppo])" if self.algorithm == "ppo" else ""
            raise ConfigError(f"{where}.algorithm={self.algorithm!r} must be 'grpo' or 'rloo'{hint}")
        if self.loss_type not in ("grpo", "dr_grpo"):
            raise ConfigError(f"{where}.loss_type={self.loss_type!r} must be 'grpo' or 'dr_grpo'")
        if self.group_size < 2 or self.prompts_per_iteration < 1 or self.iterations < 1 or self.epochs < 1:
            raise ConfigError(f"{where}: need group_size >= 2 and positive prompts_per_iteration, iterations, epochs")
        n_rollout = self.prompts_per_iteration * self.group_size
        if n_rollout % self.mini_batch:
            raise ConfigError(f"{where}.mini_batch={self.mini_batch} does not divide the rollout of "
                              f"prompts_per_iteration × group_size = {n_rollout} sequences")
        if not self.reward:
            raise ConfigError(f"{where}.reward: give at least one reward ('rm' or a function)")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward):
            raise ConfigError(f"{where}.reward_weights has {len(self.reward_weights)} entries for "
                              f"{len(self.reward)} rewards")
