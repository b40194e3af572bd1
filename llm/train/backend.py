"""What the training loop (llm/train/loop.py) needs of a backend, and the types every backend shares.

The single-process backend (llm/train/local.py) and the DeepSpeed one (parallel/engine.py) implement `Backend`;
the loop calls nothing else on them, so a test can drive the loop with any object that does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from llm.cost.flops import mfu_from_flops


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


class Backend(Protocol):
    """The model and optimizer of one run on one rank, as the training loop drives them.

    Collective methods (train_step, eval_loss, save, load, barrier, any_rank) must be called on every rank in
    the same order; a single-process backend implements barrier and any_rank trivially.
    """

    rank: int
    """Global rank of this process (0 in a single process); names the per-rank RNG file of a checkpoint."""
    dp_rank: int
    dp_size: int
    """Data-parallel coordinate and degree: which share of each global batch this rank trains on."""
    is_main: bool
    """True on the one rank that logs and writes the shared checkpoint files."""
    layout: dict
    """What a checkpoint must be resumed with (backend and degrees); saved in trainer_state.json."""

    def train_step(self, micro_batches: list[torch.Tensor], lr: float) -> StepResult:
        """One optimizer step over this rank's micro-batches of (batch, seq_len + 1) token ids at learning rate lr."""

    def eval_loss(self, micro_batches: list[torch.Tensor]) -> float:
        """Mean loss over the micro-batches of every data-parallel rank (no gradients)."""

    def save(self, path: Path) -> None:
        """Write model and optimizer state into the (existing) checkpoint directory path."""

    def load(self, path: Path) -> None:
        """Restore model and optimizer state from a checkpoint directory written by save (or resharded)."""

    def barrier(self) -> None:
        """Wait for every rank."""

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when flag is true on at least one."""

    def first_rank_with(self, flag: bool) -> int | None:
        """On every rank: the lowest rank where flag is true, or None when it is true nowhere."""

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


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter or gradient holding NaN/inf, for a divergence error message."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"parameter {name}"
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"gradient of {name}"
    return None


def first_nonfinite_state(optimizer: torch.optim.Optimizer) -> str | None:
    """The first tensor of an optimizer holding NaN/inf, for refusing to save it: the parameters it updates (under
    ZeRO the fp32 master partitions) and its state (Adam's moments)."""
    for g, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if not torch.isfinite(p).all():
                return f"an optimizer parameter of group {g}"
    for i, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                return f"optimizer state {key} of parameter #{i}"
    return None
