"""A base model from outside the chain: `base.path` naming a step directory written by launch/pretrain.py or a
Hugging Face model directory.

A step directory holds the consolidated weights (`model.pt`, whatever the layout it was trained in; read by
llm/train/checkpoint.py `read_model_weights`), the run's `config.yaml` (its `model` section is the shape) and its
own copy of the tokenizer (tokenizer.model or tokenizer.json; older step directories only name it in
`data.tokenizer`, a path as the run was given it): llm/hf/export.py `read_checkpoint`, which export and
evaluation read step directories with too. A Hugging Face directory is a LlamaForCausalLM `save_pretrained` directory
(config.json, safetensors) with its tokenizer saved beside it (tokenizer.json, tokenizer_config.json); its weights
are read by llm/hf/load.py, the import launch/import_hf.py does. Either tokenizer kind is opened by
data_pipeline/hf_tokenizer.py `load_tokenizer`, and the stage checkpoints carry it on (llm/align/handoff.py).
`load_pretrained` gives what the base stage (llm/align/base.py) writes as <out_dir>/base, so every later stage reads
it like a base made inside the chain.
"""
from __future__ import annotations

from pathlib import Path

from llm.align import handoff
from llm.config import ConfigError, ModelConfig


def is_pretrain_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "model.pt").is_file() and (p / "config.yaml").is_file() and not handoff.is_complete(p)


def _from_step_dir(src: Path) -> tuple[dict, ModelConfig, Path]:
    from llm.hf.export import read_checkpoint
    from llm.train.checkpoint import read_model_weights
    try:
        found = read_checkpoint(src)
    except ConfigError as e:
        raise handoff.HandoffError(f"base.path: {e}") from None
    return read_model_weights(src), found.model, found.tokenizer


def _from_hf_dir(src: Path) -> tuple[dict, ModelConfig, Path]:
    from llm.hf.load import read_hf_config, read_hf_weights
    try:
        cfg, weights = read_hf_config(src), read_hf_weights(src)
    except ConfigError as e:
        raise handoff.HandoffError(f"base.path (a Hugging Face directory): {e}") from None
    if not (src / "tokenizer.json").is_file():
        raise handoff.HandoffError(f"base.path={src}: no tokenizer.json; save the tokenizer with the model "
                                   "(tokenizer.save_pretrained into the same directory)")
    return weights, cfg, src / "tokenizer.json"


def load_pretrained(src: str | Path):
    """(Transformer, tokenizer, tokenizer file, ModelConfig) of a launch/pretrain.py step directory or a Hugging Face
    model directory. Raises HandoffError when a piece is missing, the tokenizer has no EOS (every reply the chat
    template encodes ends with one) or the weights do not fit the recorded shape."""
    from data_pipeline.hf_tokenizer import load_tokenizer
    from llm.hf.load import is_hf_model_dir
    from llm.model import Transformer

    src = Path(src)
    if is_pretrain_dir(src):
        weights, cfg, tok_path = _from_step_dir(src)
    elif is_hf_model_dir(src) and not handoff.is_complete(src):
        weights, cfg, tok_path = _from_hf_dir(src)
    else:
        raise handoff.HandoffError(f"base.path={src} is neither a stage checkpoint (stage.json), a pretraining step "
                                   "directory (model.pt and config.yaml) nor a Hugging Face model directory "
                                   "(config.json and model.safetensors)")
    try:
        tok = load_tokenizer(tok_path)
    except (OSError, ValueError) as e:
        raise handoff.HandoffError(f"base.path={src}: its tokenizer {tok_path} cannot be read: {e}") from None
    if tok.vocab_size > cfg.vocab_size:
        raise handoff.HandoffError(f"base.path={src}: tokenizer {tok_path} has {tok.vocab_size} pieces but the model's "
                                   f"vocab_size is {cfg.vocab_size}")
    if tok.eos_id < 0:
        raise handoff.HandoffError(f"base.path={src}: tokenizer {tok_path} has no EOS token (tokenizer_config.json "
                                   "eos_token); the chat template ends every reply with it")
    model = Transformer(cfg)
    handoff.load_checked(model, weights, src)
    return model, tok, tok_path, cfg
