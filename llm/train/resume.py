"""Resume only into the same run: what a checkpoint's config fixes, and what a resumed config may change.

Data position is the step number (llm/train/loop.py): step s reads samples [s·G, (s+1)·G) of a shuffle
seeded by train.seed over the token stream of data.paths/weights, split at data.valid_fraction. Changing
any of those on resume silently feeds the model other samples (a changed valid_fraction moves documents
between train and validation), so the resumed run would no longer be the run its curve describes. Such
changes are refused with the differences listed, unless named in `checkpoint.allow_changes`. A changed
model shape can never be resumed (the weights do not fit): that is refused whatever allow_changes says.

The tokenizer is compared by content where the checkpoint carries its copy (llm/train/checkpoint.py
`save_tokenizer`): data.tokenizer naming the same file from another directory, or after the data moved, is the
same run; the same path holding another tokenizer is not.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from llm.config import ConfigError, RunConfig, read_saved_config

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
    # Under today's key names (llm.config.RENAMED_KEYS): a run saved before a rename compares key for key.
    saved, current = read_saved_config(saved_file), asdict(cfg)
    shape = [k for k in SHAPE_KEYS if _get(saved, k) is not None and _get(saved, k) != _get(current, k)]
    if shape:
        diff = ", ".join(f"{k}: {_get(saved, k)} → {_get(current, k)}" for k in shape)
        raise ConfigError(f"checkpoint {checkpoint} holds a model of another shape ({diff}): its weights cannot be "
                          "resumed; use the checkpoint's shape, or start a new run (a new checkpoint.dir)")
    allowed = set(cfg.checkpoint.allow_changes)
    changed = [k for k in RUN_KEYS if k in _flat_keys(saved) and _get(saved, k) != _get(current, k)]
    same_tokenizer = _same_tokenizer(Path(checkpoint), cfg.data.tokenizer)
    if same_tokenizer is True:  # another path to the same tokenizer (launched elsewhere, or the data moved)
        changed = [k for k in changed if k != "data.tokenizer"]
    elif same_tokenizer is False and "data.tokenizer" not in changed:  # the same path, another tokenizer
        changed.append("data.tokenizer")
    refused = [k for k in changed if k not in allowed]
    if refused:
        def change(k: str) -> str:
            if _get(saved, k) == _get(current, k):
                return f"{k}: {_get(current, k)} now holds another tokenizer than the checkpoint's copy"
            return f"{k}: {_get(saved, k)!r} → {_get(current, k)!r}"
        diff = "; ".join(change(k) for k in refused)
        raise ConfigError(f"checkpoint {checkpoint} belongs to another run ({diff}): resuming would silently train "
                          f"on other samples or another schedule; restore those values, start a new run (a new "
                          f"checkpoint.dir), or resume anyway with checkpoint.allow_changes=[{','.join(refused)}]")


def _same_tokenizer(checkpoint: Path, tokenizer: str | None) -> bool | None:
    """Whether `tokenizer` holds the bytes of the checkpoint's own copy; None when either side is missing (a
    checkpoint written before step directories carried their tokenizer, or no data.tokenizer): compare paths."""
    from data_pipeline.hf_tokenizer import tokenizer_file
    own = tokenizer_file(checkpoint)
    if tokenizer is None or not own.is_file() or not Path(tokenizer).is_file():
        return None
    return _sha256(own) == _sha256(Path(tokenizer))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict):
            out |= _flat_keys(v, key + ".")
    return out
