"""Load any checkpoint we can evaluate as our single-process `Transformer` and its tokenizer.

Accepted: a pretraining step directory of any layout (its consolidated model.pt, config.yaml and its own copy of the
run's tokenizer, so it loads from any directory, after the data moved too), an alignment stage directory (model.pt,
stage.json, tokenizer.model), a directory written by launch/import_hf.py, and a Llama-family Hugging Face model
directory itself (config.json + safetensors + tokenizer.json).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig
from llm.model import Transformer


@dataclass
class EvalModel:
    """A model ready for scoring (eval mode, no gradients needed) with the tokenizer it was trained with."""

    model: Transformer
    tokenizer: object  # data_pipeline Tokenizer or HFTokenizer: encode/decode, eos_id, bos_id, vocab_size
    config: ModelConfig
    source: Path


def load_eval_model(path: str | Path, device: str | torch.device = "cpu") -> EvalModel:
    """Build the model of checkpoint `path` with its weights; ConfigError when `path` is not a checkpoint, its
    tokenizer is missing or does not fit the model, or the weights do not fit the config (names, shapes, floating
    point, finite: llm/hf/validate.py)."""
    from data_pipeline.hf_tokenizer import load_tokenizer
    from llm.hf.export import read_checkpoint
    from llm.hf.load import is_hf_model_dir, read_hf_config
    from llm.hf.validate import check_state_dict
    from llm.train.checkpoint import read_model_weights

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{path} is not a checkpoint directory")
    if is_hf_model_dir(p) and not (p / "model.pt").is_file():
        cfg = read_hf_config(p)
        if not (p / "tokenizer.json").is_file():
            raise ConfigError(f"{path}: no tokenizer.json (a Hugging Face model directory needs its tokenizer)")
        tokenizer_path = p
    else:
        src = read_checkpoint(p)
        cfg, tokenizer_path = src.model, src.tokenizer
    try:
        tok = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: its tokenizer cannot be read: {e}") from None
    if tok.vocab_size > cfg.vocab_size:
        raise ConfigError(f"{path}: the tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}")
    if tok.eos_id < 0:
        raise ConfigError(f"{path}: the tokenizer has no EOS token (documents are scored conditioned on EOS)")
    # Built in fp32 whatever the stored dtype: scores are compared to 1e-5, and a bf16 checkpoint loses nothing.
    model = Transformer(cfg)
    weights = read_model_weights(p)  # an HF directory's are checked as they are read (llm/hf/load.py)
    if (p / "model.pt").is_file():
        # A NaN weight would be scored (NaN, or a wrong number), an integer one silently cast: refused here.
        check_state_dict(weights, cfg, p / "model.pt")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(f"{path} does not fit its config: {str(e).splitlines()[-1].strip()}") from None
    model.to(device).eval()
    return EvalModel(model, tok, cfg, p)
