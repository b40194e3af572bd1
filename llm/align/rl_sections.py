"""The config sections of the RL stages (llm/align/config.py): PPO (`ppo`, llm/align/ppo.py) and the critic-free
`grpo_rloo` stage (GRPO or RLOO, llm/align/grpo_rloo.py), each field documented with its unit and constraint and
checked by the section's own `validate`. No torch here."""
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
    """PPO iterations (>= 1): each samples a rollout of rollout_batch answers, scores it and makes ppo_epochs passes
    over it. checkpoint_every counts them."""
    rollout_batch: int = 64
    """Prompts per iteration, one sampled answer each, drawn in per-epoch shuffled order from ppo.prompts; advantage
    whitening and the adaptive KL update are over this batch. Split over the data-parallel ranks; a multiple of
    mini_batch. >= 1."""
    ppo_epochs: int = 4
    """Passes over each rollout, each in a new random order, so ppo_epochs·rollout_batch/mini_batch actor and critic
    updates per iteration, all against the rollout's old log-probs. >= 1."""
    mini_batch: int = 32
    """Sequences per actor and critic update; divides rollout_batch and, under a launcher, splits over the
    data-parallel ranks. The losses are token means over the mini-batch. >= 1."""
    max_new_tokens: int = 8
    """Most tokens sampled per answer (EOS included); an answer with no EOS within them gets the RM score
    -reward_clip. >= 1; a prompt plus this must fit base.model.seq_len (AlignConfig.validate)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (llm/align/rollout.py `sample_seeded`), > 0. The loss's log-probs (old,
    new and the reference's) are of the untempered policy, so a temperature other than 1 samples from another
    distribution than the one the ratio and the KL describe."""
    beta: float = 0.1
    """KL penalty coefficient (initial value when kl_target is set)."""
    kl_target: float | None = None
    """Adaptive controller target in nats per sequence (Ziegler et al. 2019); null keeps β fixed."""
    kl_horizon: int = 10000
    """Horizon of the adaptive KL controller, in sequences: each iteration β ← β·(1 + e·rollout_batch / kl_horizon),
    e = clip(KL/kl_target − 1, ±0.2). 10000 as in Ziegler et al. 2019's code; at the defaults (64 sequences, 40
    iterations) β can move by ~5% at most. >= 1; unused while kl_target is null."""
    kl_estimator: str = "k1"
    """Per-token estimate of KL(π ‖ π_ref) in the rewards r_t = −β·KL_t, the logged kl and the adaptive controller:
    'k1' = log π − log π_ref (InstructGPT's penalty; unbiased, a single token's can be negative) or 'k3' = (ρ − 1) −
    log ρ with ρ = π_ref/π (unbiased and non-negative; Schulman's 'Approximating KL' note)."""
    gamma: float = 1.0
    """GAE's discount per response token, in [0, 1]; 1: undiscounted, as the RM's score comes only at the last
    token."""
    lam: float = 0.95
    """GAE's λ (Schulman et al. 2015), in [0, 1]: 0 takes the critic's one-step TD error as the advantage (low
    variance, the critic's bias), 1 the Monte-Carlo return minus the value."""
    clip_eps: float = 0.2
    """ε of the clipped surrogate: the ratio π/π_old is clipped to [1 − ε, 1 + ε] per token; in (0, 1). 0.2 as in
    Schulman et al. 2017. The logged clip_frac is the share of tokens whose ratio left that range."""
    value_clip: float = 0.2
    """How far (±) the critic's value may move from its rollout value before the clipped value loss ½·max((V − R)²,
    (clip(V, V_old ± c) − R)²) stops rewarding it (OpenAI baselines' PPO2); in the normalised reward's units, > 0.
    There is no off switch: a large value clips nothing."""
    reward_clip: float = 5.0
    """Clip the normalised RM score to ±this."""
    whiten_advantages: bool = True
    """Normalise the GAE advantages to zero mean and unit variance over every response token of the rollout, once
    before the epochs; False keeps their scale (that of the normalised RM score)."""
    ema: float = 0.0
    """EMA decay of an actor copy (e.g. 0.99); evaluated in place of the actor when > 0."""
    actor_optim: OptimConfig = field(default_factory=lambda: _optim(lr=5e-4, min_lr_ratio=1.0))
    """The actor's AdamW (as sft.optim); this stage's defaults: lr 5e-4, no warmup, constant (min_lr_ratio 1.0). Its
    schedule counts updates: iterations·ppo_epochs·rollout_batch/mini_batch."""
    critic_optim: OptimConfig = field(default_factory=lambda: _optim(lr=1e-3, min_lr_ratio=1.0))
    """The critic's AdamW, as actor_optim; defaults: lr 1e-3, no warmup, constant."""
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
        check_range(f"{where}.kl_horizon", self.kl_horizon, *ONE_OR_MORE,
                    "the adaptive controller's horizon in sequences")
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
class GRPORLOOConfig:
    """The critic-free RL stage `grpo_rloo` (llm/align/grpo_rloo.py): GRPO or RLOO from the SFT policy, rewarded by
    functions and/or the RM."""

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
    """RL iterations (>= 1): each samples prompts_per_iteration × group_size answers, scores them and makes `epochs`
    passes over them. checkpoint_every counts them."""
    prompts_per_iteration: int = 16
    """Distinct prompts per rollout, drawn in per-epoch shuffled order from grpo_rloo.prompts, each answered group_size
    times. >= 1."""
    group_size: int = 4
    """Samples per prompt (GRPO's G, RLOO's k >= 2): a rollout is prompts_per_iteration × group_size sequences."""
    epochs: int = 2
    """Passes over each rollout."""
    mini_batch: int = 32
    """Sequences per update; divides the rollout."""
    max_new_tokens: int = 8
    """Most tokens sampled per answer (EOS included), >= 1; Dr. GRPO's loss divides token sums by it. Unlike
    ppo.max_new_tokens it is not checked against base.model.seq_len: sampling stops at the model's context."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts, > 0. As in PPO, the loss's log-probs are of the untempered policy, so a
    temperature other than 1 samples from another distribution than the ratio describes."""
    beta: float = 0.04
    """KL coefficient: GRPO's loss term (DeepSeekMath §4.2 uses 0.04), RLOO's sequence-reward penalty."""
    clip_eps: float = 0.2
    """ε of the per-token clipped ratio [1 − ε, 1 + ε] applied to each sequence's advantage, as PPO's (Schulman et
    al. 2017's 0.2); in (0, 1). On the first update of a rollout the ratio is 1, so RLOO's loss is then plain
    REINFORCE."""
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=5e-4, min_lr_ratio=1.0))
    """The policy's AdamW (as sft.optim); this stage's defaults: lr 5e-4, no warmup, constant (min_lr_ratio 1.0).
    Its schedule counts iterations·epochs·(prompts_per_iteration·group_size/mini_batch) updates."""
    zero_stage: int = 0
    """As sft.zero_stage."""
    checkpoint_every: int = 10
    """As sft.checkpoint_every, in iterations."""

    def validate(self, where: str = "grpo_rloo") -> None:
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
