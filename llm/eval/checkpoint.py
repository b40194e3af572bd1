"""Load any checkpoint we can evaluate as our single-process `Transformer` and its tokenizer.

Accepted: every checkpoint kind llm/train/checkpoint_reader.py `open_checkpoint` reads: a pretraining step directory
of any layout (its consolidated model.pt, config.yaml and its own copy of the run's tokenizer, so it loads from any
directory, after the data moved too), an alignment stage directory (model.pt, stage.json, tokenizer.model), a
directory written by launch/import_hf.py, and a Llama-family Hugging Face model directory itself (config.json +
safetensors + tokenizer.json).
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
    from llm.train.checkpoint_reader import open_checkpoint

    ckpt = open_checkpoint(path)
    cfg, tokenizer_path = ckpt.model, ckpt.tokenizer
    try:
        tok = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: its tokenizer cannot be read: {e}") from None
    if tok.vocab_size > cfg.vocab_size:
        raise ConfigError(f"{path}: the tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}")
    if tok.eos_id < 0:
        raise ConfigError(f"{path}: the tokenizer has no EOS token (documents are scored conditioned on EOS)")
    # Built in fp32 whatever the stored dtype: scores are compared to 1e-5, and a bf16 checkpoint loses nothing.
    # A NaN weight would be scored (NaN, or a wrong number), an integer one silently cast: the reader refuses both.
    model = ckpt.build_model()
    model.to(device).eval()
    return EvalModel(model, tok, cfg, ckpt.path)
