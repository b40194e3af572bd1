"""What the training loop (llm/train/loop.py) needs of a backend, and the types every backend shares.

The single-process backend (llm/train/local.py) and the DeepSpeed one (parallel/engine.py) implement it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepResult:
    loss: float
    """Mean training loss over the global batch (before loss scaling)."""
    grad_norm: float | None
    """Global gradient norm before clipping; None where the backend cannot see it."""
    skipped: bool = False
    """True when fp16 overflow made the optimizer skip this step."""
    loss_scale: float | None = None
    nonfinite: str | None = None
    """For a NaN/inf loss: the first non-finite parameter or gradient, found before the optimizer step."""


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter or gradient holding NaN/inf, for a divergence error message."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"parameter {name}"
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"gradient of {name}"
    return None
