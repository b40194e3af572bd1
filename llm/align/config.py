"""Typed config of the alignment chain (SFT → reward model → PPO, DPO or RL); its sections, one dataclass per
stage, each validating its own fields, are in llm/align/sections.py and llm/align/rl_sections.py.

No torch here. YAML is the serialisation; `load_align_config` applies dotted overrides and validates with
the same habits as llm/config/ (unknown keys named with their closest match, errors as ConfigError naming
the file and key). Paths left null are derived from `out_dir`: `<out_dir>/data/*.jsonl` for the task data
and `<out_dir>/<stage>/` for each stage's checkpoint, so each stage finds the previous one by path.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

import typed_yaml
from typed_yaml import Renamed
from llm.align.rl_sections import PPOConfig, GRPORLOOConfig
from llm.align.sections import (NON_NEGATIVE, BaseConfig, DPOConfig, EvalConfig, RMConfig, SFTConfig, TaskConfig,
                                TemplateConfig, check_range)
from llm.config import ConfigError

STAGES = ("base", "sft", "rm", "ppo", "dpo", "grpo_rloo")
"""The stages' names, sections and directories; llm/align/stages.py registers what each one does."""
OPTIM_SECTIONS = (("sft", "optim"), ("rm", "optim"), ("ppo", "actor_optim"), ("ppo", "critic_optim"), ("dpo", "optim"),
                  ("grpo_rloo", "optim"))
ZERO_STAGES = (("sft", "zero_stage"), ("rm", "zero_stage"), ("ppo", "actor_zero_stage"), ("ppo", "critic_zero_stage"),
               ("dpo", "zero_stage"), ("grpo_rloo", "zero_stage"))
"""Where each trained model's optimizer and ZeRO stage are set, in the same order."""


DATA_SOURCES = {"sft.data": "sft_train", "sft.eval_data": "sft_eval", "rm.data": "pairs_train",
                "rm.eval_data": "pairs_eval", "dpo.data": "pairs_train", "ppo.prompts": "sft_train",
                "grpo_rloo.prompts": "sft_train", "eval.prompts": "prompts_eval"}
"""Each data key of the config and the bundled task file (<out_dir>/data/<name>.jsonl) it reads when null."""
DATA_KINDS = {"sft.data": "conversation", "sft.eval_data": "conversation", "rm.data": "pair", "rm.eval_data": "pair",
              "dpo.data": "pair", "ppo.prompts": "prompt", "grpo_rloo.prompts": "prompt", "eval.prompts": "prompt"}
"""The format each data key holds (llm/align/formats.py PARSERS); a stage may read a key as another kind
(llm/align/stages.py `Stage.reads_as`), e.g. the RM samples the prompts of sft.eval_data's conversations."""


RENAMED_STAGES = {"rl": "grpo_rloo"}
"""Stages that were renamed: {old name: new name}. An old name in `stages:` still runs the stage, with a one-line
note; its config section moved with it (AlignConfig.RENAMED)."""
RENAMED_SINCE = "2026-12-07"


@dataclass
class AlignConfig:
    RENAMED: ClassVar[tuple[Renamed, ...]] = tuple(Renamed(old, new, since=RENAMED_SINCE)
                                                   for old, new in RENAMED_STAGES.items())
    """Renamed sections and keys (typed_yaml's `Renamed`): `rl:` loads as `grpo_rloo:`, with a one-line note."""
    renamed_keys: ClassVar[tuple[str, ...]] = ()
    """One line per renamed key or stage name the loaded config used (set on the instance when loading); the entry
    points print each as a warning (launch/align_common.py)."""
    out_dir: str = "runs/align/default"
    """Root directory of the chain: the bundled task data under <out_dir>/data, each stage's checkpoint under
    <out_dir>/<stage>/ (how a stage finds the previous one's), progress logs under <out_dir>/logs. A run that finds
    a stage's checkpoint there skips that stage."""
    seed: int = 0
    """The chain's one seed: every random draw (task data, tokenizer, base init, batch orders, rollout noise,
    held-out samples) takes its seed from it and a named stream (llm/align/seeds.py). The accuracy margins of
    tests/align/test_chain.py were measured with the default, 0."""
    stages: list[str] = field(default_factory=lambda: ["base", "sft", "rm", "ppo"])
    """Stages `launch/chain.py` runs, in this order; add 'dpo' for the alternative third stage."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The bundled synthetic task and its data (TaskConfig): 'sort_digits', or 'none' for your own data."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    """The chat template of every stage and of evaluation (TemplateConfig)."""
    compile: bool = False
    """torch.compile each transformer block of every model a stage trains (llm/train/compile.py; a reward model's
    and critic's `.body` blocks), in debug mode and under the launcher. Off by default, as train.compile: compiling
    costs tens of seconds per stage on CPU, more than the bundled stages' training, and losses match eager only to
    fp32 rounding (tests/align/test_compile.py). Generation (with a KV cache) runs the blocks eagerly."""
    bad_rows: str = "skip"
    """A data row that cannot be used (a missing field, no assistant turn, longer than seq_len): 'skip' (named
    by file:line, counted in the log and the stage's metrics) or 'refuse' (the stage stops, naming it)."""
    reward_timeout_s: float = 60.0
    """Seconds one call of a reward function (grpo_rloo.reward, eval.reward; on a batch of completions) may take
    before the stage stops, naming it (llm/align/reward_functions.py); 0: no limit. Must be >= 0."""
    base: BaseConfig = field(default_factory=BaseConfig)
    """Stage `base`: the tiny pretrained base model, or an existing model to start from (BaseConfig)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Stage `sft`: supervised fine-tuning of the base on demonstrations (SFTConfig)."""
    rm: RMConfig = field(default_factory=RMConfig)
    """Stage `rm`: the reward model, trained on preference pairs (RMConfig)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """Stage `ppo`: PPO of the SFT policy against the reward model (llm/align/rl_sections.py PPOConfig)."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """Stage `dpo`: direct preference optimisation of the SFT policy, the alternative to rm + ppo (DPOConfig)."""
    grpo_rloo: GRPORLOOConfig = field(default_factory=GRPORLOOConfig)
    """Stage `grpo_rloo`: critic-free policy optimisation of the SFT policy with a group baseline, GRPO or RLOO
    (grpo_rloo.algorithm; llm/align/rl_sections.py GRPORLOOConfig). Formerly `rl` (RENAMED)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """The held-out evaluation every stage reports: prompts, reward functions, sampling (EvalConfig)."""

    def validate(self) -> None:
        """Each section's own checks (sections.py, rl_sections.py), then those that read several sections."""
        self.task.validate()
        self.template.validate()
        if self.bad_rows not in ("skip", "refuse"):
            raise ConfigError(f"bad_rows={self.bad_rows!r} must be 'skip' or 'refuse'")
        check_range("reward_timeout_s", self.reward_timeout_s, *NON_NEGATIVE, "0: no limit")
        self.base.validate()
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ConfigError(f"stages: unknown stage(s) {bad}; valid: {list(STAGES)}")
        for name in ("sft", "rm", "ppo", "dpo", "grpo_rloo", "eval"):
            getattr(self, name).validate()
        if self.task.name == "none":
            if "base" in self.stages and self.base.path is None:
                raise ConfigError("base: with task.name: none there is no text to pretrain a base on; set base.path")
            if "rm" in self.stages and self.rm.data is not None and self.rm.eval_data is None:
                raise ConfigError("rm.eval_data: the RM's held-out accuracy and its score mean/std (what PPO "
                                  "normalises rewards by) need held-out pairs")
        prompt_tokens = 1 + len(self.task.template_prompt) + self.task.max_len
        if prompt_tokens + max(self.ppo.max_new_tokens, self.eval.max_new_tokens) > self.base.model.seq_len:
            raise ConfigError(f"base.model.seq_len={self.base.model.seq_len} is too short for prompts of "
                              f"~{prompt_tokens} tokens plus max_new_tokens")

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


def _rename_stages(raw: dict, source: str) -> tuple[dict, list[str]]:
    """A copy of `raw` whose `stages:` list names each renamed stage (RENAMED_STAGES) by its new name, and one line
    per old name used."""
    stages = raw.get("stages")
    if not isinstance(stages, list) or not any(isinstance(s, str) and s in RENAMED_STAGES for s in stages):
        return raw, []
    notes = [f"{source}: stage {s!r} was renamed {RENAMED_STAGES[s]!r} ({RENAMED_SINCE}); it still runs under the old "
             f"name, but write stages: [..., {RENAMED_STAGES[s]}]" for s in dict.fromkeys(stages) if s in
             RENAMED_STAGES]
    return {**raw, "stages": [RENAMED_STAGES.get(s, s) if isinstance(s, str) else s for s in stages]}, notes


def align_config_from_dict(raw: dict, source: str = "<dict>") -> AlignConfig:
    """Build and validate an AlignConfig from a recipe's mapping. Old stage names and sections (RENAMED_STAGES) load
    as the new ones; `renamed_keys` then holds one line per old name used."""
    raw, notes = _rename_stages(raw, source)
    raw, section_notes = typed_yaml.rename_keys(raw, AlignConfig.RENAMED, source)
    cfg = typed_yaml.build_validated(AlignConfig, _complete_optim_sections(raw, source), source)
    object.__setattr__(cfg, "renamed_keys", tuple(section_notes + notes))
    return cfg


def load_align_config(path: str | Path | None, overrides: list[str] = ()) -> AlignConfig:
    """Load an alignment recipe, apply dotted overrides, validate. Raises ConfigError on any user mistake."""
    raw = typed_yaml.read_yaml(path) if path is not None else {}
    source = (str(path) if path is not None else "<defaults>") + (" (with command-line overrides)" if overrides else "")
    return align_config_from_dict(typed_yaml.apply_overrides(raw, list(overrides)), source)
