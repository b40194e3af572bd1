"""Typed run configuration: one dataclass per concern, YAML as serialisation.

No torch here (the planner, llm/cost and llm/scaling, and the launchers import it cheaply). `load_config` turns a
YAML file plus dotted command-line overrides into a validated `RunConfig` (through the `typed_yaml` package); every
error is a `ConfigError` whose message names the file, the key and the rule, so entry points can print it without a
stack trace.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

import typed_yaml
from typed_yaml import ConfigError, Renamed  # ConfigError re-exported: every entry point catches it
from llm.config.data import DataConfig
from llm.config.model import ModelConfig
from llm.config.parallel import ParallelConfig, PrecisionConfig
from llm.config.training import CheckpointConfig, LoggingConfig, OptimConfig, TrainConfig

__all__ = ["CheckpointConfig", "ConfigError", "DataConfig", "LoggingConfig", "ModelConfig", "OptimConfig",
           "ParallelConfig", "PrecisionConfig", "RENAMED_KEYS", "RunConfig", "TrainConfig", "config_from_dict",
           "load_config", "read_saved_config"]

RENAMED_KEYS = (
    Renamed("parallel.checkpoint_every_k", "parallel.recompute_every_k", since="2026-12-07"),
)
"""Run-config keys that were renamed, oldest first: a config (or a run's saved config.yaml) using an old name still
loads, and the run prints one line naming the new key at start-up (RunConfig.warnings). Add a rename here, never
remove one: checkpoints keep their config.yaml for as long as they are kept."""


@dataclass
class RunConfig:
    """One pretraining run: a section per concern, plus where its outputs go."""

    RENAMED: ClassVar[tuple[Renamed, ...]] = RENAMED_KEYS
    renamed_keys: ClassVar[tuple[str, ...]] = ()
    """One line per renamed key the loaded config used (set on the instance by typed_yaml.from_dict)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model's shape; checkpoints fix it (a resume into another shape is refused)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prepared datasets (launch/prepare_data.py's output) and the train/validation split."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and its learning-rate schedule."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100))
    """Length, batch, seed, evaluation and logging cadence. Defaults to 100 steps, as `train.max_steps` and
    `train.tokens` have no defaults of their own (exactly one must be set)."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """The parallel layout over the launched world, and activation recomputation."""
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    """Numeric format; `precision: bf16` is short for `precision: {dtype: bf16}`."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Saving, resuming and starting from another run's weights."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Where the metrics go besides metrics.jsonl (TensorBoard, W&B)."""
    out_dir: str = "runs/debug"
    """The run's folder: config.yaml (the resolved config), metrics.jsonl, and checkpoints/ unless checkpoint.dir
    says otherwise. One run writes it at a time (a lock file)."""

    def __post_init__(self) -> None:
        # Derived at construction, not in validate(): validating must leave the config as it found it.
        if self.checkpoint.dir is None:
            self.checkpoint.dir = str(Path(self.out_dir) / "checkpoints")

    def validate(self) -> None:
        """Raises ConfigError naming the section, key and rule; never changes the config."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "optim" and hasattr(value, "validate"):
                value.validate(f.name)
        # After train: the warmup is checked against the run's length, which train defines.
        self.optim.validate("optim", total_steps=self.total_steps)
        if self.data.document_mask and self.parallel.pipeline > 1:
            raise ConfigError(f"data.document_mask cannot be combined with parallel.pipeline={self.parallel.pipeline}: "
                              "the pipeline's stages pass only activations on, not the documents' ids and positions")

    def warnings(self) -> list[str]:
        """One line per setting that validates but is probably not what was meant; the run prints them at start-up
        (llm/train/setup.py `prepare_out_dir`)."""
        t = self.train
        length = (f"train.max_steps={t.max_steps}" if t.max_steps is not None
                  else f"train.tokens={t.tokens} is {self.total_steps} steps")
        return ([f"warning: {note}" for note in self.renamed_keys]
                + [w for w in (self.optim.warmup_warning("optim", self.total_steps, length),) if w])

    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch_size * self.model.seq_len

    @property
    def total_steps(self) -> int:
        if self.train.max_steps is not None:
            return self.train.max_steps
        return -(-self.train.tokens // self.tokens_per_step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_from_dict(raw: dict, source: str = "<dict>") -> RunConfig:
    return typed_yaml.build_validated(RunConfig, raw, source)


def read_saved_config(path: str | Path) -> dict:
    """The mapping of a run's saved config.yaml (a step directory's, an out_dir's) under today's key names
    (RENAMED_KEYS applied, without a note: the user did not write it), for readers that take a section or a key
    without building the whole RunConfig. ConfigError when it cannot be read or sets a key under both names."""
    raw, _ = typed_yaml.rename_keys(typed_yaml.read_yaml(path), RENAMED_KEYS, str(path))
    return raw


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML run config, apply dotted overrides, validate. Raises ConfigError on any user mistake."""
    return typed_yaml.load(RunConfig, path, overrides, shorthands={"precision": PrecisionConfig.SHORTHAND})
