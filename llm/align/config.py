"""Typed config of the alignment chain (SFT → reward model → PPO, DPO or RL); its sections, one dataclass per
stage, are in llm/align/sections.py.

No torch here. YAML is the serialisation; `load_align_config` applies dotted overrides and validates with
the same habits as llm/config/ (unknown keys named with their closest match, errors as ConfigError naming
the file and key). Paths left null are derived from `out_dir`: `<out_dir>/data/*.jsonl` for the task data
and `<out_dir>/<stage>/` for each stage's checkpoint, so each stage finds the previous one by path.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import typed_yaml
from llm.align.sections import (BaseConfig, DPOConfig, EvalConfig, PPOConfig, RLConfig, RMConfig, SFTConfig,
                                TaskConfig, TemplateConfig)
from llm.config import ConfigError

STAGES = ("base", "sft", "rm", "ppo", "dpo", "rl")
"""The stages' names, sections and directories; llm/align/stages.py registers what each one does."""
OPTIM_SECTIONS = (("sft", "optim"), ("rm", "optim"), ("ppo", "actor_optim"), ("ppo", "critic_optim"), ("dpo", "optim"),
                  ("rl", "optim"))
ZERO_STAGES = (("sft", "zero_stage"), ("rm", "zero_stage"), ("ppo", "actor_zero_stage"), ("ppo", "critic_zero_stage"),
               ("dpo", "zero_stage"), ("rl", "zero_stage"))
"""Where each trained model's optimizer and ZeRO stage are set, in the same order."""


DATA_SOURCES = {"sft.data": "sft_train", "sft.eval_data": "sft_eval", "rm.data": "pairs_train",
                "rm.eval_data": "pairs_eval", "dpo.data": "pairs_train", "ppo.prompts": "sft_train",
                "rl.prompts": "sft_train", "eval.prompts": "prompts_eval"}
"""Each data key of the config and the bundled task file (<out_dir>/data/<name>.jsonl) it reads when null."""
DATA_KINDS = {"sft.data": "conversation", "sft.eval_data": "conversation", "rm.data": "pair", "rm.eval_data": "pair",
              "dpo.data": "pair", "ppo.prompts": "prompt", "rl.prompts": "prompt", "eval.prompts": "prompt"}
"""The format each data key holds (llm/align/formats.py PARSERS); a stage may read a key as another kind
(llm/align/stages.py `Stage.reads_as`), e.g. the RM samples the prompts of sft.eval_data's conversations."""


INF = math.inf
POSITIVE, NON_NEGATIVE, ONE_OR_MORE = ((0, True), (INF, True)), ((0, False), (INF, True)), ((1, False), (INF, True))
OPEN_UNIT = ((0, True), (1, True))
SAMPLED = "rollouts are sampled; 0 would be greedy: no exploration, every answer to a prompt the same"


def numeric_ranges(c: "AlignConfig") -> list[tuple[str, float, tuple, tuple, str]]:
    """(key, value, (low, open), (high, open), why) of each numeric parameter with a range outside which it has no
    meaning; checked by AlignConfig.validate (the divisibility and cross-key checks are there too)."""
    p, r, d, e = c.ppo, c.rl, c.dpo, c.eval
    rows = [
        ("reward_timeout_s", c.reward_timeout_s, *NON_NEGATIVE, "0: no limit"),
        ("task.n_train", c.task.n_train, *ONE_OR_MORE, ""), ("task.n_dev", c.task.n_dev, *ONE_OR_MORE, ""),
        ("task.n_eval_prompts", c.task.n_eval_prompts, *ONE_OR_MORE, ""),
        ("base.steps", c.base.steps, *ONE_OR_MORE, ""), ("base.lr", c.base.lr, *POSITIVE, ""),
        ("base.batch_size", c.base.batch_size, *ONE_OR_MORE, ""),
        ("sft.eval_every", c.sft.eval_every, *NON_NEGATIVE, "steps between held-out losses; 0: only at the end"),
        ("rm.margin", c.rm.margin, *NON_NEGATIVE, "a negative margin rewards ranking the rejected reply higher"),
        ("rm.policy_samples", c.rm.policy_samples, *NON_NEGATIVE, "0: the demo pairs only"),
        ("dpo.beta", d.beta, *POSITIVE, "β <= 0 reverses or removes DPO's preference term"),
        ("ppo.iterations", p.iterations, *ONE_OR_MORE, ""), ("ppo.rollout_batch", p.rollout_batch, *ONE_OR_MORE, ""),
        ("ppo.ppo_epochs", p.ppo_epochs, *ONE_OR_MORE, ""), ("ppo.mini_batch", p.mini_batch, *ONE_OR_MORE, ""),
        ("ppo.max_new_tokens", p.max_new_tokens, *ONE_OR_MORE, ""),
        ("ppo.temperature", p.temperature, *POSITIVE, SAMPLED),
        ("ppo.beta", p.beta, *NON_NEGATIVE, "the KL penalty; 0: none"),
        ("ppo.kl_horizon", p.kl_horizon, *ONE_OR_MORE, "the adaptive controller's horizon in sequences"),
        ("ppo.gamma", p.gamma, (0, False), (1, False), ""), ("ppo.lam", p.lam, (0, False), (1, False), ""),
        ("ppo.clip_eps", p.clip_eps, *OPEN_UNIT, ""), ("ppo.value_clip", p.value_clip, *POSITIVE, ""),
        ("ppo.reward_clip", p.reward_clip, *POSITIVE, ""), ("ppo.ema", p.ema, (0, False), (1, True), "0: off"),
        ("rl.iterations", r.iterations, *ONE_OR_MORE, ""),
        ("rl.prompts_per_iteration", r.prompts_per_iteration, *ONE_OR_MORE, ""),
        ("rl.group_size", r.group_size, (2, False), (INF, True), "group baselines need two samples per prompt"),
        ("rl.epochs", r.epochs, *ONE_OR_MORE, ""), ("rl.mini_batch", r.mini_batch, *ONE_OR_MORE, ""),
        ("rl.max_new_tokens", r.max_new_tokens, *ONE_OR_MORE, ""),
        ("rl.temperature", r.temperature, *POSITIVE, SAMPLED),
        ("rl.beta", r.beta, *NON_NEGATIVE, "the KL coefficient; 0: none"),
        ("rl.clip_eps", r.clip_eps, *OPEN_UNIT, ""),
        ("eval.temperature", e.temperature, *NON_NEGATIVE, "0: greedy"),
        ("eval.max_new_tokens", e.max_new_tokens, *ONE_OR_MORE, ""),
        ("eval.correct_reward", e.correct_reward, (-INF, True), (INF, True), "a finite reward"),
    ]
    if p.kl_target is not None:
        rows.append(("ppo.kl_target", p.kl_target, *POSITIVE, "nats per sequence; null keeps β fixed"))
    return rows


@dataclass
class AlignConfig:
    out_dir: str = "runs/align/default"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["base", "sft", "rm", "ppo"])
    """Stages `launch/chain.py` runs, in this order; add 'dpo' for the alternative third stage."""
    task: TaskConfig = field(default_factory=TaskConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    compile: bool = False
    """torch.compile each transformer block of every model a stage trains (llm/train/compile.py; a reward model's
    and critic's `.body` blocks), in debug mode and under the launcher. Off by default, as train.compile: compiling
    costs tens of seconds per stage on CPU, more than the bundled stages' training, and losses match eager only to
    fp32 rounding (tests/align/test_compile.py). Generation (with a KV cache) runs the blocks eagerly."""
    bad_rows: str = "skip"
    """A data row that cannot be used (a missing field, no assistant turn, longer than seq_len): 'skip' (named
    by file:line, counted in the log and the stage's metrics) or 'refuse' (the stage stops, naming it)."""
    reward_timeout_s: float = 60.0
    """Seconds one call of a reward function (rl.reward, eval.reward; on a batch of completions) may take before the
    stage stops, naming it (llm/align/reward_functions.py); 0: no limit. Must be >= 0."""
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
        self._validate_ranges()
        p = self.ppo
        if p.rollout_batch % p.mini_batch != 0:
            raise ConfigError(f"ppo.mini_batch={p.mini_batch} does not divide ppo.rollout_batch={p.rollout_batch}")
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

    def _validate_ranges(self) -> None:
        """Every numeric alignment parameter against the range where it means something (NaN and inf refused
        wherever a finite number is meant); the messages name the key, its value and the range."""
        for key, value, (lo, lo_open), (hi, hi_open), why in numeric_ranges(self):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
            if not ok:
                interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
                raise ConfigError(f"{key}={value:g} must be in {interval}{f' ({why})' if why else ''}")
        r = self.rl
        for where, weights in (("rl", r.reward_weights), ("eval", self.eval.reward_weights)):
            if weights is not None and not all(math.isfinite(w) for w in weights):
                raise ConfigError(f"{where}.reward_weights={weights} must be finite numbers")

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
