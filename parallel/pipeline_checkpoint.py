"""The way back from DeepSpeed's pipeline checkpoints: its `layer_{i:02d}-model_{r:02d}-model_states.pt` files (spec
i of parallel/pipeline.py's PipelineModule, tensor-parallel rank r) merged into one llm/model.py state dict, TP
shards concatenated along their partition dimension (parallel/tensor.py). launch/consolidate.py and the checkpoint
reader's `pipeline_dir` steps come through here.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import torch

from llm.config import ModelConfig
from llm.train import safe_load
from parallel.names import layer_prefix, model_param_names
from parallel.tensor import partition_dim

LAYER_FILE = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt$")


def pipeline_state_dict_to_full(layer_states: dict[int, list[dict]], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Merge per-layer pipeline states into one llm/model.py state dict.

    layer_states: {spec index: [state dict of tensor-parallel rank 0, rank 1, ...]} as DeepSpeed saved them.
    Raises KeyError naming a missing layer or parameter.
    """
    full: dict[str, torch.Tensor] = {}
    for index, shards in sorted(layer_states.items()):
        prefix = layer_prefix(index, cfg.n_layers)
        for key in shards[0]:
            name = prefix + key
            dim = partition_dim(name)
            parts = [s[key] for s in shards]
            full[name] = parts[0].clone() if dim is None or len(parts) == 1 else torch.cat(parts, dim=dim)
    if cfg.tie_embeddings and "tok_embeddings.weight" in full:
        full["lm_head.weight"] = full["tok_embeddings.weight"]
    names = model_param_names(cfg)
    missing = [n for n in names if n not in full]
    if missing:
        raise KeyError(f"pipeline checkpoint lacks {', '.join(missing[:5])}"
                       + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return {n: full[n] for n in names}


def load_pipeline_checkpoint(ckpt_dir: str | os.PathLike, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """llm/model.py state dict from DeepSpeed pipeline checkpoint files `layer_XX-model_YY-model_states.pt`.

    ckpt_dir: the directory holding the layer files (DeepSpeed's `<save_dir>/<tag>`; our engine's tag is
    'deepspeed'). Raises FileNotFoundError when it holds none.
    """
    files = sorted(glob.glob(os.path.join(ckpt_dir, "layer_*-model_states.pt")))
    if not files:
        raise FileNotFoundError(f"no layer_XX-model_YY-model_states.pt files in {ckpt_dir}")
    layers: dict[int, dict[int, dict]] = {}
    for f in files:
        match = LAYER_FILE.search(Path(f).name)
        if match is None:
            continue
        layer, tp_rank = int(match.group(1)), int(match.group(2))
        layers.setdefault(layer, {})[tp_rank] = safe_load.load(f)
    return pipeline_state_dict_to_full({i: [by_rank[r] for r in sorted(by_rank)] for i, by_rank in layers.items()},
                                       cfg)
