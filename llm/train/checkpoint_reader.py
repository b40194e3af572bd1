"""The one reader of every checkpoint kind (docs/architecture.md, "Checkpoint kinds"): `open_checkpoint(path)` says
which kind a directory is and gives its model config, its tokenizer, its weights and the loaded model.

Kinds:
  step      a `step_XXXXXXXX/` directory of launch/pretrain.py: config.yaml (its model section is the shape), the
            consolidated weights as model.pt, and its own copy of the tokenizer (older ones only name it in
            config.yaml's data.tokenizer). A DeepSpeed pipeline checkpoint without model.pt holds its weights as
            `deepspeed/layer_*` files instead: `pipeline_dir` names them and parallel/pipeline_checkpoint.py merges them
            (launch/consolidate.py); the reader itself never imports parallel/.
  imported  the step_00000000/ launch/import_hf.py writes (trainer_state.json's layout.backend is "hf_import"), read
            as a step.
  stage     an alignment stage directory (stage.json, written last by llm/align/handoff.py): model.pt, the model
            section in stage.json, tokenizer.model or tokenizer.json beside it. A reward-model stage opens only when
            asked for (`language_model=False`); its weights are read unchecked (a value head beside the body) and
            llm/align builds its model.
  hf        a Llama-family Hugging Face model directory (config.json + safetensors, tokenizer.json): read by
            llm/hf/load.py, every tensor checked as it is read.

Every error is a ConfigError naming the directory (and the file); model.pt is read through llm/train/safe_load.py
(audited, weights-only) and checked against its config (llm/hf/validate.py `check_state_dict`: names, shapes,
floating point, finite) before a model sees it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig, read_saved_config
from llm.model import Transformer
from llm.train import safe_load
from llm.train.checkpoint import STATE_FILE
from typed_yaml.files import read_json

STAGE_FILE = "stage.json"
"""Written last by llm/align/handoff.py (not imported: llm/align sits above this layer)."""
KINDS = ("step", "imported", "stage", "hf")
PIPELINE_FILES = "layer_*-model_states.pt"
"""DeepSpeed's per-layer files of a pipeline checkpoint, in the step directory's deepspeed/ folder."""


@dataclass
class Checkpoint:
    """An opened checkpoint directory: its kind, its model config and where its weights are. The tokenizer is
    resolved on first use (a step directory's may have moved; consolidation never needs it)."""

    path: Path
    kind: str
    """One of KINDS."""
    model: ModelConfig
    config_file: Path
    """The file the model config was read from: config.yaml, stage.json or config.json."""
    weights: Path | None
    """model.pt; None for a Hugging Face directory (safetensors) and a step of pipeline layer files only."""
    pipeline_dir: Path | None = None
    """For a step without model.pt: the folder of its DeepSpeed pipeline layer files (merged by
    parallel/pipeline_checkpoint.py)."""
    stage: dict | None = None
    """stage.json, for a stage."""

    @cached_property
    def tokenizer(self) -> Path:
        """The tokenizer the model was trained with: a tokenizer.model or tokenizer.json file, or a Hugging Face
        directory holding tokenizer.json. ConfigError naming what is missing."""
        p = self.path
        if self.kind == "hf":
            if not (p / "tokenizer.json").is_file():
                raise ConfigError(f"{p}: no tokenizer.json (a Hugging Face model directory needs its tokenizer)")
            return p
        if self.kind == "stage":
            tokenizer = p if (p / "tokenizer.json").is_file() else p / "tokenizer.model"  # the kind the base had
            if not tokenizer.exists():
                raise ConfigError(f"{p}: its tokenizer {tokenizer} does not exist")
            return tokenizer
        return step_tokenizer(p)

    @property
    def language_model(self) -> bool:
        """False for a reward-model stage only."""
        return self.stage is None or self.stage.get("kind") == "lm"

    def state_dict(self, mmap: bool = False, map_location="cpu") -> dict[str, torch.Tensor]:
        """The weights under llm/model.py names, checked against the model config (names, shapes, floating point,
        finite; a reward model's are not); `mmap`: model.pt memory-mapped, not read into memory. ConfigError naming
        the file and tensor at fault, or, for pipeline layer files, saying that launch/consolidate.py merges them."""
        from llm.hf.validate import check_state_dict
        if self.kind == "hf":
            from llm.hf.load import read_hf_weights
            return read_hf_weights(self.path)  # checked as each tensor is read
        if self.weights is None:
            raise ConfigError(f"{self.path} holds no model.pt, only DeepSpeed pipeline layer files "
                              f"({self.pipeline_dir}/{PIPELINE_FILES}): merge them with launch/consolidate.py")
        state = safe_load.load(self.weights, map_location=map_location, mmap=mmap)
        return check_state_dict(state, self.model, self.weights) if self.language_model else state

    def build_model(self, state: dict[str, torch.Tensor] | None = None) -> Transformer:
        """Our single-process Transformer (fp32, on the CPU) holding `state`, by default `state_dict()`.
        ConfigError when the weights do not fit the config, or this is a reward model (llm/align builds those)."""
        if not self.language_model:
            raise ConfigError(f"{self.path} is a reward model ({self.stage.get('stage')}), not a language model")
        model = Transformer(self.model)
        try:
            model.load_state_dict(self.state_dict() if state is None else state)
        except RuntimeError as e:
            raise ConfigError(f"{self.path}: weights do not fit its {self.config_file.name} "
                              f"({str(e).splitlines()[-1].strip()})") from None
        return model


def open_checkpoint(path: str | Path, language_model: bool = True) -> Checkpoint:
    """The checkpoint directory `path`, of any kind (the module docstring). ConfigError when it is none, a stage is
    not a language model (unless `language_model` is False), or its model config is missing or invalid."""
    from llm.hf.load import is_hf_model_dir, read_hf_config

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{path} is not a checkpoint directory")
    model_pt = p / "model.pt"
    if not model_pt.is_file():
        if is_hf_model_dir(p):
            return Checkpoint(p, "hf", read_hf_config(p), p / "config.json", None)
        if not (p / "config.yaml").is_file():
            raise ConfigError(f"{path} is not a checkpoint directory (no model.pt)")
        layers = p / "deepspeed"
        if not (layers.is_dir() and any(layers.glob(PIPELINE_FILES))):
            raise ConfigError(f"{path} holds neither model.pt nor DeepSpeed pipeline layer files")
        return Checkpoint(p, "step", step_model_config(p), p / "config.yaml", None, pipeline_dir=layers)
    if (p / STAGE_FILE).exists():
        info = read_json(p / STAGE_FILE, dict, "stage file")
        if language_model and info.get("kind") != "lm":
            raise ConfigError(f"{path} is a {info.get('kind')!r} stage ({info.get('stage')}), not a language model")
        return Checkpoint(p, "stage", model_section(info.get("model"), p / STAGE_FILE), p / STAGE_FILE, model_pt,
                          stage=info)
    if not (p / "config.yaml").is_file():
        raise ConfigError(f"{path} is not a checkpoint directory (model.pt without config.yaml or {STAGE_FILE})")
    kind = "imported" if _backend(p) == "hf_import" else "step"
    return Checkpoint(p, kind, step_model_config(p), p / "config.yaml", model_pt)


def _backend(step: Path) -> str | None:
    """trainer_state.json's layout.backend (llm/hf/import_.py writes "hf_import"); None when unreadable."""
    try:
        layout = read_json(step / STATE_FILE, dict, "trainer state").get("layout")
    except ConfigError:
        return None
    return layout.get("backend") if isinstance(layout, dict) else None


def step_model_config(step: Path) -> ModelConfig:
    """The model section of step directory `step`'s config.yaml, validated. Only that section is read: the run's
    dataset may be long gone, and an imported checkpoint has no dataset yet, so the whole run config (data.paths,
    logging) need not validate."""
    raw = read_saved_config(step / "config.yaml")
    return model_section(raw.get("model"), step / "config.yaml")


def model_section(raw, where: Path) -> ModelConfig:
    """A model section (config.yaml's or stage.json's) as a validated ModelConfig; ConfigError naming `where`."""
    import typed_yaml
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: no model section (a mapping of the model's shape)" if raw is None else
                          f"{where}: model must be a mapping of the model's shape, not {type(raw).__name__}")
    return typed_yaml.build_validated(ModelConfig, raw, str(where))


def step_tokenizer(step: Path) -> Path:
    """The tokenizer of step directory `step`: its own copy (tokenizer.json or tokenizer.model beside model.pt),
    else, for a checkpoint written before step directories carried one, the data.tokenizer its config.yaml names
    (as given at launch: relative to the directory the run started in) when that still resolves from here.
    ConfigError naming what is missing otherwise."""
    from data_pipeline.hf_tokenizer import tokenizer_file

    own = tokenizer_file(step)
    if own.is_file():
        return own
    data = read_saved_config(step / "config.yaml").get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{step / 'config.yaml'}: data must be a mapping, not {type(data).__name__}")
    named = data.get("tokenizer")
    if named is not None and not isinstance(named, str):
        raise ConfigError(f"{step / 'config.yaml'}: data.tokenizer={named!r} must be a path")
    if not named:
        # str(Path("")) is ".", which exists: an unset data.tokenizer must be caught before it becomes a path.
        raise ConfigError(f"{step}: no tokenizer: none beside model.pt (tokenizer.model or tokenizer.json) and its "
                          "config.yaml leaves data.tokenizer unset (the run read pre-tokenized data); copy the "
                          f"tokenizer the data was prepared with into {step}")
    for candidate in (Path(named), step / Path(named).name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{step}: its tokenizer {named} does not exist (config.yaml data.tokenizer, looked for from "
                      f"{Path.cwd()}), and its own copy (tokenizer.model or tokenizer.json beside model.pt) is not "
                      "there either (a checkpoint written before step directories carried their tokenizer): copy the "
                      f"tokenizer into {step}")
