"""Read a Llama-family Hugging Face model directory (config.json + safetensors) as our config and weights.

Tensors are read one at a time with safetensors' `safe_open` (memory-mapped), so a large model is never held
twice: the state dict returned is the only copy. No transformers import: reading needs only safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig
from llm.hf.convert import from_hf_name, model_config_from_hf, parameter_names

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def is_hf_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and ((p / WEIGHTS_FILE).is_file() or (p / INDEX_FILE).is_file())


def read_hf_config(path: str | Path) -> ModelConfig:
    """Our ModelConfig for HF directory `path`; ConfigError when it is not one or asks for what we lack."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        raise ConfigError(f"{path}: no {CONFIG_FILE} (not a Hugging Face model directory)")
    return model_config_from_hf(json.loads(f.read_text()), str(f))


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of HF directory `path`: the shards its index names, or model.safetensors."""
    p = Path(path)
    if (p / INDEX_FILE).is_file():
        names = sorted(set(json.loads((p / INDEX_FILE).read_text())["weight_map"].values()))
        files = [p / n for n in names]
    else:
        files = [p / WEIGHTS_FILE]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"{path}: missing weight file(s) {', '.join(missing)}")
    return files


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of HF directory `path` under llm/model.py names, in their stored dtype.

    With tied embeddings (no lm_head tensor stored) lm_head.weight is the embedding tensor itself, as in our model's
    state dict. Raises ConfigError on an unsupported config, a tensor we have no place for, or a missing one.
    """
    from safetensors import safe_open

    cfg = read_hf_config(path)
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        with safe_open(str(f), framework="pt") as st:
            for hf_name in st.keys():
                ours = from_hf_name(hf_name)
                if ours is not None:
                    state[ours] = st.get_tensor(hf_name)
    if cfg.tie_embeddings and "tok_embeddings.weight" in state:
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    expected = parameter_names(cfg)
    missing = sorted(expected - set(state))
    if missing:
        raise ConfigError(f"{path}: no tensor for {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    extra = sorted(set(state) - expected)
    if extra:
        raise ConfigError(f"{path}: tensor {extra[0]} beyond config.json's num_hidden_layers={cfg.n_layers}")
    return state

