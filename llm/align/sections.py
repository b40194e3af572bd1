"""The sections of the alignment config (llm/align/config.py): the bundled task, the chat template, and one
dataclass per stage, each field documented with its unit and constraint. No torch here."""
from __future__ import annotations

from dataclasses import dataclass, field

from llm.config import ConfigError, ModelConfig, OptimConfig


@dataclass
class TaskConfig:
    """The synthetic task with a checker (llm/align/task.py) and the chat template of every stage."""

    name: str = "sort_digits"
    """'sort_digits': the bundled task writes the data every null data key reads; 'none': no bundled data, so a
    stage whose data key is null is skipped (with a line saying so) and a null eval.prompts skips evaluation."""
    min_len: int = 3
    max_len: int = 5
    demo_error_rate: float = 0.5
    """Share of SFT demonstrations (and of each RM/DPO candidate) that are corrupted: the headroom."""
    corruptions: list[str] = field(default_factory=lambda: ["swap", "drop", "replace", "insert"])
    n_train: int = 3000
    n_dev: int = 300
    n_eval_prompts: int = 256
    """Held-out prompts on which every stage's checker accuracy is measured."""
    template_prompt: str = "sort {prompt}:"
    template_response: str = "{response}"
    """Chat template. Tokens are encode(prompt part) + encode(response part) + [EOS]; SentencePiece's dummy
    prefix makes the response start with '▁', i.e. the pair tokenizes like the text 'prompt response'."""

    def validate(self, where: str = "task") -> None:
        if self.name not in ("sort_digits", "none"):
            raise ConfigError(f"{where}.name={self.name!r}: 'sort_digits' (the bundled task) or 'none' (your data)")
        if not 2 <= self.min_len <= self.max_len <= 10:
            raise ConfigError(f"{where}: need 2 <= min_len <= max_len <= 10 (distinct digits)")
        if not 0.0 <= self.demo_error_rate <= 1.0:
            raise ConfigError(f"{where}.demo_error_rate={self.demo_error_rate} must be in [0, 1]")
        bad = [c for c in self.corruptions if c not in ("swap", "drop", "replace", "insert")]
        if bad or not self.corruptions:
            raise ConfigError(f"{where}.corruptions={self.corruptions} must be a non-empty subset of "
                              "[swap, drop, replace, insert]")
        if "{prompt}" not in self.template_prompt or "{response}" not in self.template_response:
            raise ConfigError(f"{where}: template_prompt needs '{{prompt}}' and template_response '{{response}}'")


@dataclass
class TemplateConfig:
    """The chat template of every stage and of evaluation (llm/align/template.py): per role, a format string
    with one '{content}'. Recorded in each stage checkpoint; a stage refuses a checkpoint made with another."""

    system: str = "{content}"
    user: str | None = None
    """null: task.template_prompt with its {prompt} as {content} (the bundled task's "sort {content}:")."""
    assistant: str | None = None
    """null: task.template_response with its {response} as {content}."""

    def validate(self, where: str = "template") -> None:
        for role in ("system", "user", "assistant"):
            fmt = getattr(self, role)
            if fmt is not None and fmt.count("{content}") != 1:
                raise ConfigError(f"{where}.{role}={fmt!r} must hold '{{content}}' exactly once")


def _optim(**stage_defaults) -> OptimConfig:
    """An alignment stage's optimizer: no weight decay and no warmup unless the stage says otherwise (a small
    model fine-tuned for a few hundred steps), AdamW betas and eps as in pretraining, and torch's per-parameter
    AdamW rather than the fused kernel: the chain's measured results (tests/align/test_chain.py) were measured
    with it, and the ~2e-7 per step by which the kernels differ is amplified by sampling into different answers."""
    return OptimConfig(**{"weight_decay": 0.0, "warmup_steps": 0, "fused": False, **stage_defaults})


@dataclass
class BaseConfig:
    """Pretrains the chain's tiny base model with llm/train (run_debug) on format-only task text."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(n_layers=2, d_model=64, n_heads=4, d_ff=192,
                                                                   vocab_size=320, seq_len=32))
    steps: int = 150
    lr: float = 3e-3
    batch_size: int = 32
    path: str | None = None
    """Start from an existing model instead of pretraining one: a stage checkpoint (llm/align/handoff.py), used as
    <out_dir>/base is, a step directory written by launch/pretrain.py (model.pt, config.yaml and the tokenizer
    its data.tokenizer names) or a Hugging Face LlamaForCausalLM directory (config.json, safetensors and its
    tokenizer.json), which the base stage imports into <out_dir>/base (llm/align/base_stage.py)."""


@dataclass
class SFTConfig:
    init: str | None = None
    """Checkpoint to fine-tune; defaults to <out_dir>/base."""
    data: str | None = None
    """Training conversations, rows {"messages": [{"role", "content"}, ...]} (the loss on every assistant turn)
    or {"prompt", "completion"}: a JSONL file, a `datasets.save_to_disk` directory or a parquet file
    (llm/align/formats.py); null: the bundled task's <out_dir>/data/sft_train.jsonl."""
    eval_data: str | None = None
    """Held-out conversations for eval_loss, as `data`; null: the bundled sft_eval.jsonl. The RM also samples their
    prompts (the turns before the last assistant reply) for its held-out policy pairs (rm.policy_samples)."""
    steps: int = 600
    batch_size: int = 32
    packing: bool = False
    """Pack several examples per row (prompts still masked; attention crosses example boundaries)."""
    eval_every: int = 100
    """Steps between held-out losses on sft.eval_data (0: only at the end)."""
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=3e-3, warmup_steps=10))
    zero_stage: int = 0
    """ZeRO stage of the model's DeepSpeed engine under the launcher: 0, 1 or 2 (ignored in debug mode)."""
    checkpoint_every: int = 50
    """An in-stage checkpoint every this many steps (llm/align/resume.py): a killed stage resumes there; 0 = none."""


@dataclass
class RMConfig:
    init: str | None = None
    """Defaults to <out_dir>/sft."""
    data: str | None = None
    """Preference pairs {"prompt", "chosen", "rejected"} (strings or message lists), as sft.data; null: the
    bundled pairs_train.jsonl."""
    eval_data: str | None = None
    """Held-out pairs; null: the bundled pairs_eval.jsonl."""
    steps: int = 300
    batch_size: int = 32
    margin: float = 0.0
    policy_samples: int = 4
    """Also sample this many answers per training prompt from the init (SFT) model and pair, by the checker,
    a correct with a wrong one (InstructGPT's labellers ranked model samples); 0 uses the demo pairs only. The
    training prompts are ppo.prompts', the held-out ones those of sft.eval_data's conversations (their reply
    dropped), each answer scored by eval.reward; with either key unset (task.name: none) no policy pairs.
    Without them the RM learns what the demo corruptions look like and PPO finds the errors it never saw."""
    shuffle_labels: bool = False
    """Control experiment: swap chosen/rejected at random, so the RM learns nothing."""
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=1e-3, warmup_steps=10))
    zero_stage: int = 0
    """As sft.zero_stage."""
    checkpoint_every: int = 50
    """As sft.checkpoint_every."""


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


@dataclass
class DPOConfig:
    init: str | None = None
    """Policy and frozen reference; defaults to <out_dir>/sft."""
    data: str | None = None
    """Preference pairs, as rm.data; null: the bundled pairs_train.jsonl."""
    steps: int = 100
    batch_size: int = 32
    beta: float = 0.1
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=1e-4))
    zero_stage: int = 0
    """As sft.zero_stage."""
    checkpoint_every: int = 50
    """As sft.checkpoint_every."""


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


@dataclass
class EvalConfig:
    prompts: str | None = None
    """Held-out prompts every stage is evaluated on, as ppo.prompts; null: the bundled prompts_eval.jsonl."""
    reward: list[str] = field(default_factory=lambda: ["llm.align.task:sort_reward"])
    """Reward functions scoring the held-out answers (eval_reward, their mean), as rl.reward without 'rm'."""
    reward_weights: list[float] | None = None
    correct_reward: float = 1.0
    """An answer whose eval reward reaches this counts as correct (checker_accuracy, RM pairs, RM agreement)."""
    temperature: float = 1.0
    """Checker accuracy is measured on samples at this temperature: the policy PPO optimises (0 = greedy)."""
    max_new_tokens: int = 8
