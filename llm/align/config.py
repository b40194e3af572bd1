"""Typed config of the alignment chain (SFT → reward model → PPO or DPO), one dataclass per stage.

No torch here. YAML is the serialisation; `load_align_config` applies dotted overrides and validates with
the same habits as llm/config.py (unknown keys named with their closest match, errors as ConfigError naming
the file and key). Paths left null are derived from `out_dir`: `<out_dir>/data/*.jsonl` for the task data
and `<out_dir>/<stage>/` for each stage's checkpoint, so each stage finds the previous one by path.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import typed_yaml
from llm.config import ConfigError, ModelConfig, OptimConfig

STAGES = ("base", "sft", "rm", "ppo", "dpo", "rl")
"""The stages' names, sections and directories; llm/align/stages.py registers what each one does."""
OPTIM_SECTIONS = (("sft", "optim"), ("rm", "optim"), ("ppo", "actor_optim"), ("ppo", "critic_optim"), ("dpo", "optim"),
                  ("rl", "optim"))
ZERO_STAGES = (("sft", "zero_stage"), ("rm", "zero_stage"), ("ppo", "actor_zero_stage"), ("ppo", "critic_zero_stage"),
               ("dpo", "zero_stage"), ("rl", "zero_stage"))
"""Where each trained model's optimizer and ZeRO stage are set, in the same order."""


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


DATA_SOURCES = {"sft.data": "sft_train", "sft.eval_data": "sft_eval", "rm.data": "pairs_train",
                "rm.eval_data": "pairs_eval", "dpo.data": "pairs_train", "ppo.prompts": "sft_train",
                "rl.prompts": "sft_train", "eval.prompts": "prompts_eval"}
"""Each data key of the config and the bundled task file (<out_dir>/data/<name>.jsonl) it reads when null."""


def _optim(**stage_defaults) -> OptimConfig:
    """An alignment stage's optimizer: no weight decay and no warmup unless the stage says otherwise (a small
    model fine-tuned for a few hundred steps), AdamW betas and eps as in pretraining."""
    return OptimConfig(**{"weight_decay": 0.0, "warmup_steps": 0, **stage_defaults})


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
    <out_dir>/base is, or a step directory written by launch/pretrain.py (model.pt, config.yaml and the tokenizer
    its data.tokenizer names), which the base stage imports into <out_dir>/base (llm/align/pretrained.py)."""


@dataclass
class SFTConfig:
    init: str | None = None
    """Checkpoint to fine-tune; defaults to <out_dir>/base."""
    data: str | None = None
    """Training conversations, rows {"messages": [{"role", "content"}, ...]} (the loss on every assistant turn)
    or {"prompt", "completion"}: a JSONL file, a `datasets.save_to_disk` directory or a parquet file
    (llm/align/formats.py); null: the bundled task's <out_dir>/data/sft_train.jsonl."""
    eval_data: str | None = None
    """Held-out conversations for eval_loss, as `data`; null: the bundled sft_eval.jsonl."""
    steps: int = 600
    batch_size: int = 32
    packing: bool = False
    """Pack several examples per row (prompts still masked; attention crosses example boundaries)."""
    eval_every: int = 100
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
    a correct with a wrong one (InstructGPT's labellers ranked model samples); 0 uses the demo pairs only.
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
    """Reward functions `path/file.py:fn` or `package.module:fn` (llm/align/rewards.py) and/or 'rm' (the RM's
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


@dataclass
class AlignConfig:
    out_dir: str = "runs/align/default"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["base", "sft", "rm", "ppo"])
    """Stages `launch/chain.py` runs, in this order; add 'dpo' for the alternative third stage."""
    task: TaskConfig = field(default_factory=TaskConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    bad_rows: str = "skip"
    """A data row that cannot be used (a missing field, no assistant turn, longer than seq_len): 'skip' (named
    by file:line, counted in the log and the stage's metrics) or 'refuse' (the stage stops, naming it)."""
    base: BaseConfig = field(default_factory=BaseConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        self.task.validate()
        self.template.validate()
        if self.bad_rows not in ("skip", "refuse"):
            raise ConfigError(f"bad_rows={self.bad_rows!r} must be 'skip' or 'refuse'")
        self.base.model.validate("base.model")
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ConfigError(f"stages: unknown stage(s) {bad}; valid: {list(STAGES)}")
        for name in ("sft", "rm", "dpo"):
            s = getattr(self, name)
            if s.steps <= 0 or s.batch_size <= 0:
                raise ConfigError(f"{name}.steps and {name}.batch_size must be positive")
        for section, key in OPTIM_SECTIONS:
            stage = getattr(self, section)
            getattr(stage, key).validate(f"{section}.{key}", total_steps=getattr(stage, "steps", None))
        for name in ("sft", "rm", "ppo", "dpo", "rl"):
            if getattr(self, name).checkpoint_every < 0:
                raise ConfigError(f"{name}.checkpoint_every must be >= 0 (0: no in-stage checkpoints)")
        for section, key in ZERO_STAGES:
            z = getattr(getattr(self, section), key)
            # ZeRO-3 would partition the weights that generate() and the hand-off's state dict read whole.
            if z not in (0, 1, 2):
                raise ConfigError(f"{section}.{key}={z} must be 0, 1 or 2 (ZeRO-3 is not supported for the "
                                  "alignment stages)")
        p = self.ppo
        if p.rollout_batch % p.mini_batch != 0:
            raise ConfigError(f"ppo.mini_batch={p.mini_batch} does not divide ppo.rollout_batch={p.rollout_batch}")
        if not (0 < p.clip_eps < 1 and 0 <= p.gamma <= 1 and 0 <= p.lam <= 1 and 0 <= p.ema < 1):
            raise ConfigError("ppo: need 0 < clip_eps < 1, gamma and lam in [0, 1], ema in [0, 1)")
        if p.beta < 0 or (p.kl_target is not None and p.kl_target <= 0):
            raise ConfigError("ppo.beta must be >= 0 and ppo.kl_target positive (or null)")
        if p.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"ppo.kl_estimator={p.kl_estimator!r} must be 'k1' or 'k3'")
        self._validate_rl()
        if self.task.name == "none":
            if "base" in self.stages and self.base.path is None:
                raise ConfigError("base: with task.name: none there is no text to pretrain a base on; set base.path")
            if "rm" in self.stages and self.rm.data is not None and self.rm.eval_data is None:
                raise ConfigError("rm.eval_data: the RM's held-out accuracy and its score mean/std (what PPO "
                                  "normalises rewards by) need held-out pairs")
        prompt_tokens = 1 + len(self.task.template_prompt) + self.task.max_len
        if prompt_tokens + max(p.max_new_tokens, self.eval.max_new_tokens) > self.base.model.seq_len:
            raise ConfigError(f"base.model.seq_len={self.base.model.seq_len} is too short for prompts of "
                              f"~{prompt_tokens} tokens plus max_new_tokens")

    def _validate_rl(self) -> None:
        r = self.rl
        if r.algorithm not in ("grpo", "rloo"):
            hint = "; PPO is the `ppo` stage (stages: [..., ppo])" if r.algorithm == "ppo" else ""
            raise ConfigError(f"rl.algorithm={r.algorithm!r} must be 'grpo' or 'rloo'{hint}")
        if r.loss_type not in ("grpo", "dr_grpo"):
            raise ConfigError(f"rl.loss_type={r.loss_type!r} must be 'grpo' or 'dr_grpo'")
        if r.group_size < 2 or r.prompts_per_iteration < 1 or r.iterations < 1 or r.epochs < 1:
            raise ConfigError("rl: need group_size >= 2 and positive prompts_per_iteration, iterations, epochs")
        if (r.prompts_per_iteration * r.group_size) % r.mini_batch:
            raise ConfigError(f"rl.mini_batch={r.mini_batch} does not divide the rollout of prompts_per_iteration × "
                              f"group_size = {r.prompts_per_iteration * r.group_size} sequences")
        if not r.reward:
            raise ConfigError("rl.reward: give at least one reward ('rm' or a function)")
        if "rm" in self.eval.reward:
            raise ConfigError("eval.reward: 'rm' is not an evaluation reward (the RM is what RL optimises)")
        for where, specs, weights in (("rl", r.reward, r.reward_weights),
                                      ("eval", self.eval.reward, self.eval.reward_weights)):
            if weights is not None and len(weights) != len(specs):
                raise ConfigError(f"{where}.reward_weights has {len(weights)} entries for {len(specs)} rewards")

    # Paths derived from out_dir: the hand-off between stages is by path.
    def data_path(self, name: str) -> str:
        return str(Path(self.out_dir) / "data" / f"{name}.jsonl")

    def source(self, key: str) -> str | None:
        """The data a key of DATA_SOURCES reads (e.g. 'sft.data'): the configured path, else the bundled task's file,
        else (task.name: none) None."""
        section, name = key.split(".")
        given = getattr(getattr(self, section), name)
        if given is not None or self.task.name == "none":
            return given
        return self.data_path(DATA_SOURCES[key])

    def stage_dir(self, stage: str) -> str:
        # base.path is the base stage's directory only when it is a stage checkpoint; a pretraining step
        # directory is imported into <out_dir>/base.
        if stage == "base" and self.base.path and (Path(self.base.path) / "stage.json").is_file():
            return self.base.path
        return str(Path(self.out_dir) / stage)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _complete_optim_sections(raw: dict, source: str) -> dict:
    """A copy of `raw` with each optimizer section a recipe gives completed from its stage's defaults (not from
    OptimConfig's pretraining ones: `dpo.optim: {lr: 1e-3}` keeps DPO's zero warmup). A ZeRO stage under an
    optimizer section is refused with the key it moved to."""
    out, defaults = dict(raw), AlignConfig()
    for (section, key), (_, zero_key) in zip(OPTIM_SECTIONS, ZERO_STAGES):
        node = out.get(section)
        given = node.get(key) if isinstance(node, dict) else None
        if not isinstance(given, dict):
            continue  # absent: the stage's default_factory; not a mapping: from_dict names the key
        if "zero_stage" in given:
            raise ConfigError(f"{source}: {section}.{key}.zero_stage moved to {section}.{zero_key} (ZeRO partitions "
                              "the engine; it is not an optimizer setting)")
        out[section] = {**node, key: {**dataclasses.asdict(getattr(getattr(defaults, section), key)), **given}}
    return out


def align_config_from_dict(raw: dict, source: str = "<dict>") -> AlignConfig:
    return typed_yaml.build_validated(AlignConfig, _complete_optim_sections(raw, source), source)


def load_align_config(path: str | Path | None, overrides: list[str] = ()) -> AlignConfig:
    """Load an alignment recipe, apply dotted overrides, validate. Raises ConfigError on any user mistake."""
    raw = typed_yaml.read_yaml(path) if path is not None else {}
    source = (str(path) if path is not None else "<defaults>") + (" (with command-line overrides)" if overrides else "")
    return align_config_from_dict(typed_yaml.apply_overrides(raw, list(overrides)), source)
