"""Parameter names across layouts: llm/model.py's state-dict keys, and how a pipeline stage renumbers them.

A PipelineModule (parallel/pipeline.py) names spec i's parameters '{i}.<key>', where <key> is the full-model
name minus a prefix: 'layers.{i-1}.' for the blocks (specs 1..L), none for the embedding (0), the final norm
(L+1) and the head (L+2); the tied embedding is 'tied_modules.<tie key>.tok_embeddings.weight'. Consolidation
(parallel/consolidate.py), pipeline checkpoints and divergence messages all translate through here, so these
names are a checkpoint format: keep them stable.
"""
from __future__ import annotations

import torch
from torch import nn

from llm.config import ModelConfig


def model_param_names(cfg: ModelConfig) -> list[str]:
    """State-dict keys of llm/model.py's Transformer, in its order (both names of a tied weight)."""
    from llm.model import Transformer
    with torch.device("meta"):
        return list(Transformer(cfg).state_dict().keys())


def layer_prefix(index: int, n_layers: int) -> str:
    """Prefix that turns spec `index`'s state-dict keys into llm/model.py names (see the module docstring)."""
    if 1 <= index <= n_layers:
        return f"layers.{index - 1}."
    if 0 <= index <= n_layers + 2:
        return ""
    raise IndexError(f"spec index {index} out of range for {n_layers + 3} specs")


def stage_param_names(module) -> dict[str, str]:
    """{name in this stage's PipelineModule: llm/model.py name} for the stage's own parameters."""
    n_layers = module._num_layers - 3
    out = {}
    for name, _ in module.named_parameters():
        head, rest = name.split(".", 1)
        if head == "tied_modules":
            out[name] = rest.split(".", 1)[1]  # drop the tie key
        else:
            out[name] = layer_prefix(int(head), n_layers) + rest
    return out


def local_full_names(module: nn.Module, pipelined: bool) -> dict[str, str]:
    """{local parameter name: llm/model.py name}. Tensor parallelism keeps names; pipeline stages renumber."""
    if pipelined:
        return stage_param_names(module)
    return {name: name for name, _ in module.named_parameters()}
