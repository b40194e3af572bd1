"""DeepSpeed's checkpoint files read as data (llm/train/safe_load.py), on every path that hands a directory to
DeepSpeed: its engine's `load_checkpoint` (resume, universal resume) and its universal-checkpoint converter.

Its pickles hold four classes besides tensors and containers (found by disassembling the checkpoints of ZeRO
0–3, bf16, TP2 and PP2 layouts and of their universal conversions with DeepSpeed 0.19.8): the loss scaler
(`LossScaler` and, under fp16, `DynamicLossScaler`, plain attribute holders), `ZeroStageEnum` and the
`fragment_address` dataclass. Those are allow-listed by name; anything else refuses the whole directory.
"""
from __future__ import annotations

from pathlib import Path

from llm.train import safe_load


def allow_deepspeed_types() -> None:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    safe_load.allow(LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address)


def guard(checkpoint_dir: str | Path) -> None:
    """Before DeepSpeed opens `checkpoint_dir`: refuse it (CheckpointRefused, naming the file) if any of its
    pickles would run code, and force torch's weights-only unpickler for DeepSpeed's own `torch.load` calls,
    which ask for the full unpickler."""
    allow_deepspeed_types()
    safe_load.audit_tree(checkpoint_dir)
    safe_load.force_weights_only()
