"""What the training loop (llm/train/loop.py) needs of a backend, and the types every backend shares.

The single-process backend (llm/train/single_process.py) and the DeepSpeed one (parallel/engine.py) implement `Backend`;
the loop calls nothing else on them, so a test can drive the loop with any object that does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from llm.cost.flops import mfu_from_flops
from llm.moe import RouterRecord
from llm.train.runtime import Runtime, StepResult


class Backend(Runtime, Protocol):
    """The model and optimizer of one run on one rank, as the training loop drives them: a runtime
    (llm/train/runtime.py: rank, collectives) that also takes the loop's steps.

    Collective methods (train_step, eval_loss, save, load, and the runtime's) must be called on every rank in the
    same order.
    """

    layout: dict
    """What a checkpoint must be resumed with (backend and degrees); saved in trainer_state.json."""
    routing: RouterRecord | None
    """An MoE model's router record (llm/moe.py), whose routing the loop logs (llm/train/routing.py); None if dense."""

    def train_step(self, micro_batches: list[torch.Tensor], lr: float) -> StepResult:
        """One optimizer step over this rank's micro-batches of (batch, seq_len + 1) token ids at learning rate lr."""

    def eval_loss(self, micro_batches: list[torch.Tensor]) -> float:
        """Mean loss over the micro-batches of every data-parallel rank (no gradients)."""

    def save(self, path: Path) -> None:
        """Write model and optimizer state into the (existing) checkpoint directory path."""

    def load(self, path: Path) -> None:
        """Restore model and optimizer state from a checkpoint directory written by save (or resharded)."""

    def diagnose_nonfinite(self) -> str | None:
        """The first parameter, gradient or optimizer state holding NaN/inf (llm/model.py name), or None.
        Collective on no backend: each rank looks at what it holds."""

    def can_reshard(self, saved: dict, current: dict) -> tuple[bool, str]:
        """Whether a checkpoint of layout `saved` resumes with optimizer state in layout `current`, and why not."""


@dataclass(frozen=True)
class Throughput:
    """What MFU and HFU are measured against (PaLM App. B): FLOPs per trained token and the devices' peak."""

    flops_per_token: float
    """Model FLOPs per token (no recomputation): MFU's numerator per token."""
    hardware_flops_per_token: float
    """FLOPs actually executed per token, recomputation included: HFU's."""
    peak_flops: float
    """Peak FLOP/s of one device."""
    n_devices: int = 1
    """Devices the peak is multiplied by (on CPU: nodes, whose cores all ranks of the node share)."""

    def mfu(self, tokens_per_s: float) -> float:
        return mfu_from_flops(tokens_per_s, self.flops_per_token, self.peak_flops, self.n_devices)

    def hfu(self, tokens_per_s: float) -> float:
        return mfu_from_flops(tokens_per_s, self.hardware_flops_per_token, self.peak_flops, self.n_devices)
