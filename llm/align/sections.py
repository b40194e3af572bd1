"""The sections of the alignment config (llm/align/config.py): the bundled task, the chat template, the base, the
held-out evaluation and the SFT, RM and DPO stages, one dataclass each, its fields documented with their unit and
constraint and checked by its own `validate` (the RL stages' sections, ppo and grpo_rloo: llm/align/rl_sections.py).
No torch here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from llm.config import ConfigError, ModelConfig, OptimConfig

INF = math.inf
POSITIVE, NON_NEGATIVE, ONE_OR_MORE = ((0, True), (INF, True)), ((0, False), (INF, True)), ((1, False), (INF, True))
OPEN_UNIT = ((0, True), (1, True))
"""(bound, open) pairs of `check_range`."""
SAMPLED = "rollouts are sampled; 0 would be greedy: no exploration, every answer to a prompt the same"


def check_range(key: str, value, low: tuple, high: tuple, why: str = "") -> None:
    """Refuse `value` of config key `key` outside the interval (low, high), each bound a (number, open) pair: a
    parameter with no meaning there (NaN and inf refused wherever a finite number is meant). The message names the
    key, its value and the range, and `why`."""
    (lo, lo_open), (hi, hi_open) = low, high
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ConfigError(f"{key}={value:g} must be in {interval}{f' ({why})' if why else ''}")


def check_trained(section, where: str, optims: tuple[str, ...] = ("optim",),
                  zero_stages: tuple[str, ...] = ("zero_stage",)) -> None:
    """The checks of a stage section that trains models: a positive steps and batch_size where it has them, each
    optimizer section (against the stage's steps), checkpoint_every >= 0 and each ZeRO stage 0, 1 or 2."""
    if hasattr(section, "steps") and (section.steps <= 0 or section.batch_size <= 0):
        raise ConfigError(f"{where}.steps and {where}.batch_size must be positive")
    for key in optims:
        getattr(section, key).validate(f"{where}.{key}", total_steps=getattr(section, "steps", None))
    if section.checkpoint_every < 0:
        raise ConfigError(f"{where}.checkpoint_every must be >= 0 (0: no in-stage checkpoints)")
    for key in zero_stages:
        z = getattr(section, key)
        # ZeRO-3 would partition the weights that generate() and the hand-off's state dict read whole.
        if z not in (0, 1, 2):
            raise ConfigError(f"{where}.{key}={z} must be 0, 1 or 2 (ZeRO-3 is not supported for the alignment "
                              "stages)")


def check_weights(where: str, specs: list[str], weights: list[float] | None) -> None:
    """reward_weights: finite numbers, one per reward."""
    if weights is not None and not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"{where}.reward_weights={weights} must be finite numbers")


@dataclass
class TaskConfig:
    """The synthetic task with a checker (llm/align/task.py) and the chat template of every stage."""

    name: str = "sort_digits"
    """'sort_digits': the bundled task writes the data every null data key reads; 'none': no bundled data, so a
    stage whose data key is null is skipped (with a line saying so) and a null eval.prompts skips evaluation."""
    min_len: int = 3
    """Fewest digits in a task prompt: each prompt is distinct digits, its length drawn uniformly in [min_len,
    max_len]. Need 2 <= min_len <= max_len: a corruption acts on two adjacent positions."""
    max_len: int = 5
    """Most digits in a task prompt, at most 10 (the digits are distinct). It also sizes AlignConfig's check that
    base.model.seq_len holds a prompt of ~1 + len(template_prompt) + max_len tokens (a character-level estimate)
    plus max_new_tokens, a check made with task.name: none too."""
    demo_error_rate: float = 0.5
    """Share of SFT demonstrations (and of each RM/DPO candidate) that are corrupted: the headroom."""
    corruptions: list[str] = field(default_factory=lambda: ["swap", "drop", "replace", "insert"])
    """How a corrupted demonstration or candidate is made wrong (llm/align/task.py `corrupt`), one kind drawn
    uniformly each time: 'swap' two adjacent digits, 'drop' one, 'replace' one by a digit not in the answer,
    'insert' such a digit (the last two kept sorted: wrong content in the right order). A non-empty subset of the
    four; without 'insert' the RM never sees an over-long answer, the first thing PPO then exploits."""
    n_train: int = 3000
    """Distinct training prompts (>= 1): sft_train.jsonl's demonstrations (and so the default ppo.prompts and
    grpo_rloo.prompts), pairs_train.jsonl's pairs (a prompt whose two candidates the checker ties gives none) and, with
    n_dev's, the base's pretraining text."""
    n_dev: int = 300
    """Distinct held-out prompts (>= 1), disjoint from the training and evaluation ones: sft_eval.jsonl (SFT's
    eval_loss, the RM's held-out policy pairs) and pairs_eval.jsonl (the RM's held-out accuracy and the score
    mean/std PPO normalises by); also part of the base's pretraining text."""
    n_eval_prompts: int = 256
    """Held-out prompts on which every stage's checker accuracy is measured."""
    template_prompt: str = "sort {prompt}:"
    """Format of a task prompt, with '{prompt}' where the digits go; the chat template's user role when
    template.user is null, and the prompt part of the base's pretraining text."""
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
        for key in ("n_train", "n_dev", "n_eval_prompts"):
            check_range(f"{where}.{key}", getattr(self, key), *ONE_OR_MORE)


@dataclass
class TemplateConfig:
    """The chat template of every stage and of evaluation (llm/align/template.py): per role, a format string
    with one '{content}'. Recorded in each stage checkpoint; a stage refuses a checkpoint made with another."""

    system: str = "{content}"
    """Format of a system turn, with '{content}' exactly once; the default passes the message through as it is. The
    bundled task has no system turns: it applies only to data whose messages hold one."""
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
    """Shape of the bundled base (llm/config/model.py): 2 layers of width 64, a 32-token context and 320 vocabulary
    entries, enough for the character-level task tokenizer (4 specials + 256 bytes + the characters; a tokenizer
    with more pieces is refused). With base.path the model keeps its own shape, but AlignConfig's prompt-length
    check still reads this section's seq_len."""
    steps: int = 150
    """Optimizer steps of the base's pretraining (llm/train run_debug, on the CPU): a linear warmup of min(10,
    steps) steps, not configurable, then cosine decay to 0.1·lr. >= 1; ignored with base.path."""
    lr: float = 3e-3
    """Peak learning rate of the base's pretraining (AdamW, no weight decay); high, as a 2-layer model of width 64
    tolerates. > 0; ignored with base.path."""
    batch_size: int = 32
    """Sequences of base.model.seq_len tokens per optimizer step of the base's pretraining, one micro-batch (no
    accumulation). >= 1; ignored with base.path."""
    path: str | None = None
    """Start from an existing model instead of pretraining one: a stage checkpoint (llm/align/handoff.py), used as
    <out_dir>/base is, a step directory written by launch/pretrain.py (model.pt, config.yaml and the tokenizer
    its data.tokenizer names) or a Hugging Face LlamaForCausalLM directory (config.json, safetensors and its
    tokenizer.json), which the base stage imports into <out_dir>/base (llm/align/base_stage.py)."""

    def validate(self, where: str = "base") -> None:
        self.model.validate(f"{where}.model")
        check_range(f"{where}.steps", self.steps, *ONE_OR_MORE)
        check_range(f"{where}.lr", self.lr, *POSITIVE)
        check_range(f"{where}.batch_size", self.batch_size, *ONE_OR_MORE)


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
    """Optimizer steps (> 0), batch_size examples each, read in per-epoch shuffled order (llm/align/seeds.py
    `batch_indices`): steps·batch_size / len(data) epochs (6.4 on the bundled 3000 demonstrations)."""
    batch_size: int = 32
    """Examples (conversations) per optimizer step, the global batch, split over the data-parallel ranks; the loss
    is the mean over all its response tokens. With packing still examples, packed into fewer rows. > 0."""
    packing: bool = False
    """Pack several examples per row (prompts still masked; attention crosses example boundaries)."""
    eval_every: int = 100
    """Steps between held-out losses on sft.eval_data (0: only at the end)."""
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=3e-3, warmup_steps=10))
    """The AdamW and schedule of this stage (llm/config/training.py OptimConfig). Keys a recipe gives override this
    stage's defaults, not pretraining's: lr 3e-3, 10 warmup steps, cosine to 0.1·lr, no weight decay, the
    per-parameter (unfused) AdamW (`_optim`)."""
    zero_stage: int = 0
    """ZeRO stage of the model's DeepSpeed engine under the launcher: 0, 1 or 2 (ignored in debug mode)."""
    checkpoint_every: int = 50
    """An in-stage checkpoint every this many steps (llm/align/resume.py): a killed stage resumes there; 0 = none."""

    def validate(self, where: str = "sft") -> None:
        check_trained(self, where)
        check_range(f"{where}.eval_every", self.eval_every, *NON_NEGATIVE,
                    "steps between held-out losses; 0: only at the end")


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
    """Optimizer steps (> 0), batch_size pairs each, in per-epoch shuffled order over rm.data plus the policy pairs
    (policy_samples)."""
    batch_size: int = 32
    """Preference pairs per optimizer step (2·batch_size sequences through the model), split over the data-parallel
    ranks. > 0."""
    margin: float = 0.0
    """m in the loss −log σ(r_chosen − r_rejected − m): the score gap, in the RM's raw score units, below which a
    correctly ranked pair still costs loss; one constant for every pair (Llama 2 §3.2.2 sets it per pair from the
    rating gap). >= 0; 0 is InstructGPT's plain Bradley–Terry loss."""
    policy_samples: int = 4
    """Also sample this many answers per training prompt from the init (SFT) model and pair, by the checker,
    a correct with a wrong one (InstructGPT's labellers ranked model samples); 0 uses the demo pairs only. The
    training prompts are ppo.prompts', the held-out ones those of sft.eval_data's conversations (their reply
    dropped), each answer scored by eval.reward; with either key unset (task.name: none) no policy pairs.
    Without them the RM learns what the demo corruptions look like and PPO finds the errors it never saw."""
    shuffle_labels: bool = False
    """Control experiment: swap chosen/rejected at random, so the RM learns nothing."""
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=1e-3, warmup_steps=10))
    """As sft.optim; this stage's defaults: lr 1e-3, 10 warmup steps."""
    zero_stage: int = 0
    """As sft.zero_stage."""
    checkpoint_every: int = 50
    """As sft.checkpoint_every."""

    def validate(self, where: str = "rm") -> None:
        check_trained(self, where)
        check_range(f"{where}.margin", self.margin, *NON_NEGATIVE,
                    "a negative margin rewards ranking the rejected reply higher")
        check_range(f"{where}.policy_samples", self.policy_samples, *NON_NEGATIVE, "0: the demo pairs only")


@dataclass
class DPOConfig:
    init: str | None = None
    """Policy and frozen reference; defaults to <out_dir>/sft."""
    data: str | None = None
    """Preference pairs, as rm.data; null: the bundled pairs_train.jsonl."""
    steps: int = 100
    """Optimizer steps (> 0), batch_size pairs each, in per-epoch shuffled order over dpo.data."""
    batch_size: int = 32
    """Preference pairs per optimizer step (2·batch_size sequences through policy and reference), split over the
    data-parallel ranks. > 0."""
    beta: float = 0.1
    """β in the loss −log σ(β·[(log π − log π_ref)(chosen) − (log π − log π_ref)(rejected)]), log-probs summed over
    response tokens: the KL coefficient of the RLHF objective DPO solves, larger keeping the policy closer to the
    reference. > 0; 0.1 as in most of Rafailov et al. 2023's experiments."""
    optim: OptimConfig = field(default_factory=lambda: _optim(lr=1e-4))
    """As sft.optim; this stage's defaults: lr 1e-4, no warmup."""
    zero_stage: int = 0
    """As sft.zero_stage."""
    checkpoint_every: int = 50
    """As sft.checkpoint_every."""

    def validate(self, where: str = "dpo") -> None:
        check_trained(self, where)
        check_range(f"{where}.beta", self.beta, *POSITIVE, "β <= 0 reverses or removes DPO's preference term")


@dataclass
class EvalConfig:
    prompts: str | None = None
    """Held-out prompts every stage is evaluated on, as ppo.prompts; null: the bundled prompts_eval.jsonl."""
    reward: list[str] = field(default_factory=lambda: ["llm.align.task:sort_reward"])
    """Reward functions scoring the held-out answers (eval_reward, their mean), as grpo_rloo.reward without 'rm'."""
    reward_weights: list[float] | None = None
    """One finite weight per eval.reward entry, the eval reward being their weighted sum; null: all 1."""
    correct_reward: float = 1.0
    """An answer whose eval reward reaches this counts as correct (checker_accuracy, RM pairs, RM agreement)."""
    temperature: float = 1.0
    """Checker accuracy is measured on samples at this temperature: the policy PPO optimises (0 = greedy)."""
    max_new_tokens: int = 8
    """Most tokens sampled per held-out answer (EOS included), for checker accuracy, the held-out KL and the RM's
    policy samples (rm.policy_samples). >= 1; a prompt plus this must fit base.model.seq_len (AlignConfig.validate).
    8 covers the bundled answers: at most task.max_len = 5 digits, the '▁' and EOS."""

    def validate(self, where: str = "eval") -> None:
        check_range(f"{where}.temperature", self.temperature, *NON_NEGATIVE, "0: greedy")
        check_range(f"{where}.max_new_tokens", self.max_new_tokens, *ONE_OR_MORE)
        check_range(f"{where}.correct_reward", self.correct_reward, (-INF, True), (INF, True), "a finite reward")
        check_weights(where, self.reward, self.reward_weights)
        if "rm" in self.reward:
            raise ConfigError(f"{where}.reward: 'rm' is not an evaluation reward (the RM is what RL optimises)")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward):
            raise ConfigError(f"{where}.reward_weights has {len(self.reward_weights)} entries for "
                              f"{len(self.reward)} rewards")
