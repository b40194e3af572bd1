"""Export one of our checkpoints as a Hugging Face model directory that `from_pretrained` loads without custom code.

Any layout's checkpoint directory works (debug, ZeRO-3, TP, PP): each holds the consolidated single-process
weights as model.pt (llm/model.py names), config.yaml (the resolved run config) and a copy of the run's tokenizer
(llm/train/checkpoint.py `save_tokenizer`); so does an alignment stage directory (model.pt, tokenizer.model,
stage.json; llm/align/handoff.py), and a checkpoint that launch/import_hf.py wrote (its tokenizer.json beside
model.pt). `read_checkpoint` is the one reader of those three kinds that export, evaluation, the audit and the
alignment chain's outside base share; stage.json is read by typed_yaml/files.py `read_json` and model.pt through
llm/train/safe_load.py (audited, weights-only), then checked against its config (llm/hf/validate.py
`check_state_dict`: names, shapes, floating point, finite) before anything is written. What is written:
config.json (LlamaConfig), safetensors weights (sharded with an index past `max_shard_size`) and
generation_config.json, all by transformers' save_pretrained, and the tokenizer files (data_pipeline/hf_tokenizer.py).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig, read_saved_config
from typed_yaml.files import read_json
from llm.hf.convert import hf_config_dict, parameter_names, to_hf_name
from llm.hf.validate import check_state_dict
from llm.train import safe_load

# Written by llm/align/handoff.py (not imported: llm/align sits above this layer).
STAGE_FILE = "stage.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass
class CheckpointSource:
    """What an export reads: the model file, its shape, and the tokenizer (a .model file, a tokenizer.json, or an HF
    directory holding one)."""

    weights: Path
    model: ModelConfig
    tokenizer: Path


def step_model_config(step: Path) -> ModelConfig:
    """The model section of step directory `step`'s config.yaml, validated. Only that section is read: the run's
    dataset may be long gone, and an imported checkpoint has no dataset yet, so the whole run config (data.paths,
    logging) need not validate."""
    raw = read_saved_config(step / "config.yaml")
    return _model_section(raw.get("model"), step / "config.yaml")


def _model_section(raw, where: Path) -> ModelConfig:
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


def read_checkpoint(path: str | Path) -> CheckpointSource:
    """Locate the weights, model config and tokenizer of a checkpoint or stage directory; ConfigError otherwise."""
    p = Path(path)
    if not (p / "model.pt").exists():
        raise ConfigError(f"{path} is not a checkpoint directory (no model.pt)")
    if (p / STAGE_FILE).exists():
        info = read_json(p / STAGE_FILE, dict, "stage file")
        if info.get("kind") != "lm":
            raise ConfigError(f"{path} is a {info.get('kind')!r} stage ({info.get('stage')}), not a language model")
        model = _model_section(info.get("model"), p / STAGE_FILE)
        tokenizer = p if (p / "tokenizer.json").is_file() else p / "tokenizer.model"  # the kind the base had
        if not tokenizer.exists():
            raise ConfigError(f"{path}: its tokenizer {tokenizer} does not exist")
    elif (p / "config.yaml").is_file():
        model, tokenizer = step_model_config(p), step_tokenizer(p)
    else:
        raise ConfigError(f"{path} is not a checkpoint directory (model.pt without config.yaml or {STAGE_FILE})")
    return CheckpointSource(p / "model.pt", model, tokenizer)


def hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under HF names; the tied lm_head is left out (HF ties it to the embedding itself)."""
    expected = parameter_names(cfg)
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)
        raise ConfigError(f"model.pt does not match its config: {', '.join(odd[:3])} missing or unexpected")
    return {to_hf_name(k): v for k, v in state.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}


def export_hf(checkpoint: str | Path, out_dir: str | Path, force: bool = False, max_shard_size: str = "5GB") -> Path:
    """Write checkpoint as an HF model directory out_dir. Raises ConfigError on a bad source or a non-empty out_dir
    (unless force, which replaces it).

    The HF model is built on the meta device (accelerate's init_empty_weights) and its parameters are the
    memory-mapped tensors of model.pt (load_state_dict(assign=True)): no second copy of the weights exists.
    """
    from accelerate import init_empty_weights
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from data_pipeline.hf_tokenizer import is_hf_tokenizer, load_tokenizer, save_hf_tokenizer

    src = read_checkpoint(checkpoint)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ConfigError(f"{out_dir} exists and is not empty (pass --force to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tok = load_tokenizer(src.tokenizer)
    if tok.vocab_size > src.model.vocab_size:
        raise ConfigError(f"{src.tokenizer} has {tok.vocab_size} tokens but the model only {src.model.vocab_size}")
    # Audited, weights-only and memory-mapped; then checked against the config (names, shapes, dtypes, finiteness).
    state = check_state_dict(safe_load.load(src.weights, mmap=True), src.model, src.weights)
    dtype = next(iter(state.values())).dtype
    config = LlamaConfig(**hf_config_dict(src.model, tok.bos_id, tok.eos_id, tok.pad_id,
                                          str(dtype).removeprefix("torch.")))
    with init_empty_weights():
        model = LlamaForCausalLM(config)
    result = model.load_state_dict(hf_state_dict(state, src.model), strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (src.model.tie_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"{checkpoint}: LlamaForCausalLM wants {missing[:3]}, got extra {result.unexpected_keys[:3]}")
    model.tie_weights()
    model.generation_config = GenerationConfig(**{k: v for k, v in (("bos_token_id", tok.bos_id),
                                                                    ("eos_token_id", tok.eos_id),
                                                                    ("pad_token_id", tok.pad_id)) if v >= 0})
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    if is_hf_tokenizer(src.tokenizer):
        folder = src.tokenizer if src.tokenizer.is_dir() else src.tokenizer.parent
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, out / name)
    else:
        save_hf_tokenizer(src.tokenizer, out)
    return out
