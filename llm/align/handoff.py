"""The stage checkpoint: what one stage hands to the next, and the checks that refuse a mismatch.

A stage directory holds
- `model.pt`: the model's state dict (a Transformer for base/SFT/PPO/DPO, a RewardModel for the RM);
- the tokenizer the model was trained with, of the kind the base had: a SentencePiece `tokenizer.model`, or a
  Hugging Face `tokenizer.json` with its tokenizer_config.json (data_pipeline/hf_tokenizer.py `copy_tokenizer`);
- `stage.json`: {stage, kind ('lm' or 'reward'), model (ModelConfig as a dict), tokenizer_fingerprint,
  vocab_size, tokenizer (its kind, a key of TOKENIZER_FILES), template (the chat template,
  llm/align/template.py), metrics, extra (e.g. the RM's reward mean/std)} — written last, so its presence marks
  the directory complete (the chain skips a stage whose stage.json exists);
- `config.yaml`: the resolved alignment config that produced it.

`load_stage` rebuilds the model from the recorded shape and raises HandoffError, naming both sides,
when the tokenizer, vocabulary, kind or any tensor shape does not match what the caller expects.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch

from llm.config import ModelConfig
from llm.config.model import MoEConfig
from llm.train import safe_load
from typed_yaml.disk import disk_full_as
from typed_yaml.errors import HandoffError  # exit 4; raised here, defined with the other user errors

STAGE_FILE = "stage.json"
TOKENIZER_FILES = {"sentencepiece": "tokenizer.model", "hf": "tokenizer.json"}
"""The tokenizer file of a stage directory, by the kind stage.json records."""


@dataclass
class StageInfo:
    stage: str
    kind: str
    model: dict
    tokenizer_fingerprint: str
    vocab_size: int
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    template: dict = field(default_factory=dict)
    """The chat template's role formats ({} in checkpoints written before templates were recorded)."""
    tokenizer: str = "sentencepiece"
    """The tokenizer's kind, a key of TOKENIZER_FILES (checkpoints written before HF tokenizers: SentencePiece)."""

    @property
    def model_config(self) -> ModelConfig:
        moe = self.model.get("moe")  # asdict wrote MoEConfig as a nested dict
        return ModelConfig(**{**self.model, "moe": None if moe is None else MoEConfig(**moe)})


def is_complete(path: str | Path) -> bool:
    return (Path(path) / STAGE_FILE).is_file()


def tokenizer_path(path: str | Path) -> Path:
    """The tokenizer file of the complete stage directory `path` (the kind its stage.json records)."""
    return Path(path) / TOKENIZER_FILES[read_info(path).tokenizer]


def checkpoint_tokenizer(path: str | Path):
    """The tokenizer of stage directory `path`: a SentencePiece `Tokenizer` or an `HFTokenizer`, as its stage.json
    records."""
    from data_pipeline.hf_tokenizer import load_tokenizer
    file = tokenizer_path(path)
    try:
        return load_tokenizer(file)
    # Only the tokenizer's own file is read here: a missing one (FileNotFoundError) or one that does not parse
    # (ValueError, data_pipeline/tokenizer.py) is a damaged checkpoint, not a bug.
    except (OSError, ValueError) as e:
        raise HandoffError(f"{path}: its tokenizer {file.name} cannot be read ({' '.join(str(e).split())[:200]}); "
                           "the checkpoint is damaged: copy it again or run the stage that writes it") from None


def reward_stats(info: StageInfo, key: str, path) -> tuple[float, float]:
    """(mean, std) of the scores the reward model read as config key `key` (at `path`, described by `info`)
    recorded on held-out responses, by which its score is normalised. Raises HandoffError unless it is a reward
    model."""
    if info.kind != "reward":
        raise HandoffError(f"{key}={path} is a {info.kind} checkpoint ({info.stage}), not a reward model")
    return info.extra["reward_mean"], info.extra["reward_std"]


def save_stage(path: str | Path, stage: str, model: torch.nn.Module, tokenizer_path: str | Path,
               config_yaml: str = "", metrics: dict | None = None, extra: dict | None = None,
               template: dict | None = None) -> Path:
    """Write a stage checkpoint into `path` (replacing any partial one), stage.json last. `tokenizer_path`: a
    SentencePiece .model or a tokenizer.json (its tokenizer_config.json beside it is copied too). Raises
    HandoffError when the copy would not name the same special tokens (an HF tokenizer whose EOS only
    config.json gives)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    # A full disk: one line naming the file, the half-written folder deleted, nothing published.
    with disk_full_as(tmp, f"the {stage} stage directory {path}", remove=tmp,
                      then="nothing was published; free space and rerun the same command (it resumes from the "
                           "stage's last in-stage checkpoint, if any)"):
        return _write_stage(path, tmp, stage, model, tokenizer_path, config_yaml, metrics, extra, template)


def _write_stage(path, tmp, stage, model, tokenizer_path, config_yaml, metrics, extra, template) -> Path:
    from data_pipeline.hf_tokenizer import copy_tokenizer, is_hf_tokenizer, load_tokenizer
    from llm.model import RewardModel
    tmp.mkdir(parents=True)
    kind = "reward" if isinstance(model, RewardModel) else "lm"
    with open(tmp / "model.pt", "wb") as f:  # a file object: a full disk keeps its errno
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f)
    tok = load_tokenizer(copy_tokenizer(tokenizer_path, tmp))
    special = (tok.bos_id, tok.eos_id, tok.pad_id)
    source = load_tokenizer(tokenizer_path)
    if special != (source.bos_id, source.eos_id, source.pad_id):
        shutil.rmtree(tmp)
        raise HandoffError(f"{tokenizer_path}: its (bos, eos, pad) ids {(source.bos_id, source.eos_id, source.pad_id)} "
                           f"come partly from a config.json the stage checkpoint does not carry (the copy gives "
                           f"{special}); name them in tokenizer_config.json")
    (tmp / "config.yaml").write_text(config_yaml)
    info = StageInfo(stage, kind, asdict(model.cfg), tok.fingerprint(), tok.vocab_size, metrics or {}, extra or {},
                     template or {}, "hf" if is_hf_tokenizer(tokenizer_path) else "sentencepiece")
    (tmp / STAGE_FILE).write_text(json.dumps(asdict(info), indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def read_info(path: str | Path) -> StageInfo:
    path = Path(path)
    if not is_complete(path):
        raise HandoffError(f"{path} is not a complete stage checkpoint (no {STAGE_FILE}); run the stage that "
                           "writes it first")
    try:
        raw = json.loads((path / STAGE_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HandoffError(f"{path / STAGE_FILE} is not JSON ({e}); the stage that wrote {path} did not finish "
                           "writing it or it was damaged: remove the directory and run that stage again") from None
    if not isinstance(raw, dict):
        raise HandoffError(f"{path / STAGE_FILE} holds a {type(raw).__name__}, not a stage record object")
    names = {f.name for f in fields(StageInfo)}
    required = {f.name for f in fields(StageInfo) if f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(raw)), sorted(set(raw) - names)
    if missing or unknown:
        raise HandoffError(f"{path / STAGE_FILE} is not a stage record: missing keys {missing}, unknown keys "
                           f"{unknown}; remove {path} and run the stage that writes it again")
    return StageInfo(**raw)


def check_template(info: StageInfo, path, template: dict) -> None:
    """Refuse a checkpoint trained with another chat template than `template` (one recorded, that is)."""
    if info.template and info.template != template:
        diff = {k: (template.get(k), v) for k, v in info.template.items() if template.get(k) != v}
        raise HandoffError(f"chat template mismatch: {path} was trained with another template, {{role: (this "
                           f"stage's, the checkpoint's)}} = {diff}; set `template` as it was")


def check_compatible(a: StageInfo, a_path, b: StageInfo, b_path) -> None:
    """Refuse two checkpoints that must share tokenization (e.g. the PPO actor and the reward model)."""
    if a.tokenizer_fingerprint != b.tokenizer_fingerprint:
        raise HandoffError(f"tokenizer mismatch: {a_path} was trained with tokenizer {a.tokenizer_fingerprint[:12]}… "
                           f"but {b_path} with {b.tokenizer_fingerprint[:12]}…; both stages must use one tokenizer")
    if a.model["vocab_size"] != b.model["vocab_size"]:
        raise HandoffError(f"vocab mismatch: {a_path} has model.vocab_size={a.model['vocab_size']} but {b_path} "
                           f"has {b.model['vocab_size']}")


def load_stage(path: str | Path, kind: str, tokenizer_fingerprint: str | None = None,
               model_cfg: ModelConfig | None = None, map_location="cpu"):
    """Load a stage checkpoint as `kind` ('lm' → Transformer, 'reward' → RewardModel).

    An 'lm' checkpoint may be loaded as 'reward' (the RM starts from SFT: body loaded, fresh value head);
    a 'reward' one may not be loaded as 'lm'. Raises HandoffError on a different tokenizer fingerprint,
    a different model shape than `model_cfg`, or any missing/unexpected/mis-shaped tensor.
    Returns (model, StageInfo).
    """
    from llm.model import RewardModel
    from llm.model import Transformer

    path = Path(path)
    info = read_info(path)
    if tokenizer_fingerprint is not None and info.tokenizer_fingerprint != tokenizer_fingerprint:
        raise HandoffError(f"tokenizer mismatch: {path} was trained with tokenizer {info.tokenizer_fingerprint[:12]}… "
                           f"but this stage uses {tokenizer_fingerprint[:12]}…")
    cfg = info.model_config
    if model_cfg is not None and asdict(model_cfg) != info.model:
        diff = {k: (v, info.model.get(k)) for k, v in asdict(model_cfg).items() if info.model.get(k) != v}
        raise HandoffError(f"shape mismatch: {path} holds a model with {{key: (expected, found)}} = {diff}")
    if kind == "lm" and info.kind == "reward":
        raise HandoffError(f"{path} is a reward model ({info.stage}); this stage needs a language model")
    state = safe_load.load(path / "model.pt", map_location=map_location)
    if kind == "reward":
        model = RewardModel(cfg)
        target = model if info.kind == "reward" else model.body
    elif kind == "lm":
        model = target = Transformer(cfg)
    else:
        raise ValueError(f"kind must be 'lm' or 'reward', got {kind!r}")
    load_checked(target, state, path)
    return model, info


def load_checked(module: torch.nn.Module, state: dict, path: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} in checkpoint vs {tuple(v.shape)} in model"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise HandoffError(f"{path}/model.pt does not fit the model: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}, shape mismatches {shapes[:5]}")
    module.load_state_dict(state)
