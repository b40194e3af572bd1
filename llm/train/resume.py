"""Resume only into the same run: what a checkpoint's config fixes, and what a resumed config may change.

Data position is the step number (llm/train/loop.py): step s reads samples [s·G, (s+1)·G) of a shuffle
seeded by train.seed over the token stream of data.paths/weights, split at data.valid_fraction. Changing
any of those on resume silently feeds the model other samples (a changed valid_fraction moves documents
between train and validation), so the resumed run would no longer be the run its curve describes. Such
changes are refused with the differences listed, unless named in `checkpoint.allow_changes`. A changed
model shape can never be resumed (the weights do not fit): that is refused whatever allow_changes says.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typed_yaml
from llm.config import ConfigError, RunConfig

SHAPE_KEYS = ("model.n_layers", "model.d_model", "model.n_heads", "model.n_kv_heads", "model.head_dim",
              "model.d_ff", "model.vocab_size", "model.tie_embeddings")
"""Keys whose change makes the saved weights not fit the model."""
RUN_KEYS = ("model.seq_len", "train.global_batch_size", "train.seed", "data.paths", "data.weights",
            "data.valid_fraction", "data.tokenizer")
"""Keys that decide which tokens each step reads. Schedule keys (max_steps, lr, warmup) may change: extending
a run is common, and the LR column of metrics.jsonl shows it."""


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def check_same_run(checkpoint: Path, cfg: RunConfig) -> None:
    """ConfigError listing every difference between checkpoint/config.yaml and cfg that changes the run."""
    saved_file = Path(checkpoint) / "config.yaml"
    if not saved_file.is_file():
        return  # written by a version that saved no config: nothing to compare against
    saved, current = typed_yaml.read_yaml(saved_file), asdict(cfg)
    shape = [k for k in SHAPE_KEYS if _get(saved, k) is not None and _get(saved, k) != _get(current, k)]
    if shape:
        diff = ", ".join(f"{k}: {_get(saved, k)} → {_get(current, k)}" for k in shape)
        raise ConfigError(f"checkpoint {checkpoint} holds a model of another shape ({diff}): its weights cannot be "
                          "resumed; use the checkpoint's shape, or start a new run (a new checkpoint.dir)")
    allowed = set(cfg.checkpoint.allow_changes)
    changed = [k for k in RUN_KEYS if k in _flat_keys(saved) and _get(saved, k) != _get(current, k)]
    refused = [k for k in changed if k not in allowed]
    if refused:
        diff = "; ".join(f"{k}: {_get(saved, k)!r} → {_get(current, k)!r}" for k in refused)
        raise ConfigError(f"checkpoint {checkpoint} belongs to another run ({diff}): resuming would silently train "
                          f"on other samples or another schedule; restore those values, start a new run (a new "
                          f"checkpoint.dir), or resume anyway with checkpoint.allow_changes=[{','.join(refused)}]")


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict):
            out |= _flat_keys(v, key + ".")
    return out
