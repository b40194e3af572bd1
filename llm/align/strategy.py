"""The strategy every alignment stage trains through: its place in a data-parallel job, the collectives that
rebuild global batches and statistics, and the preparation of each trainable model (OpenRLHF's strategy object).

The stages are written once against `Strategy`; `LocalStrategy` is single-process debug mode (plain torch AdamW,
identity collectives) and parallel/align_engine.py's `DeepSpeedStrategy` the launcher's (one DeepSpeed engine per
trainable model, torch.distributed collectives). The entry point (launch/align_common.py) picks one and passes it
in, so no module of llm/align depends on DeepSpeed or torch.distributed.

Data parallelism is the stages' business: each rank takes its contiguous share of a global batch (`shard`) and
normalises its loss by the global count / world size, so the engine's gradient average is the global mean and a
layout computes debug mode's update.

A stage drives each model it trains through a `Trainer` (its engine stepped at the scheduled learning rate); the
models it only evaluates (reference policy, reward model) are `frozen`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch

from llm.config import ConfigError, OptimConfig
from llm.train import safe_load
from llm.train.optim import make_optimizer
from llm.train.schedule import lr_at


def shard(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous share of n items. Raises ValueError unless world divides n."""
    if n % world:
        raise ValueError(f"batch of {n} does not split over {world} data-parallel ranks")
    per = n // world
    return slice(rank * per, (rank + 1) * per)


def check_split(key: str, n: int, world: int) -> None:
    """Raise ConfigError unless the `world` data-parallel ranks split the config value `key`=n (a mini-batch)."""
    if n % world:
        raise ConfigError(f"{key}={n} does not split over {world} data-parallel ranks")


class ModelEngine(Protocol):
    """One trainable model as a strategy prepared it."""

    module: torch.nn.Module
    """The plain nn.Module: generate(), state dicts and evaluation read it."""
    optimizer: torch.optim.Optimizer
    """Its param_groups' "lr" is set by the caller before each step."""

    def __call__(self, *args, **kwargs): ...

    def train(self, mode: bool = True) -> None: ...

    def backward_step(self, loss: torch.Tensor) -> float:
        """Backward, clip to optim.grad_clip, optimizer step, gradients cleared; returns the global gradient norm
        before clipping (nan when the engine does not report it)."""

    def save_state(self, directory: Path, name: str) -> None:
        """Write the weights and optimizer state as files `<name>.*` under `directory` (an in-stage checkpoint,
        llm/align/resume.py); every rank calls it and writes its share."""

    def load_state(self, directory: Path, name: str) -> None:
        """Restore what `save_state` wrote, exactly (every file read with weights_only=True)."""


class Strategy(Protocol):
    rank: int
    world: int
    device: torch.device
    """Where this rank's inputs go."""

    @property
    def is_main(self) -> bool: ...

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (n divisible by world, checked)."""

    def sum(self, value: float) -> float:
        """Sum of a float over ranks."""

    def gather(self, items: list) -> list:
        """The concatenation over ranks, in rank order, of each rank's list of picklable items: the global batch
        rebuilt from the ranks' contiguous shares."""

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """torch.cat over ranks, in rank order, of each rank's (rows, ...) tensor; every rank's shape is equal."""

    def barrier(self) -> None: ...

    def close(self) -> None:
        """End the job's process group (after a barrier); nothing in debug mode."""

    def prepare(self, module: torch.nn.Module, optim: OptimConfig, zero_stage: int) -> ModelEngine:
        """`module` ready to train with AdamW from `optim`; zero_stage is ignored where there is no sharding."""


class LocalEngine:
    """Debug mode's model: plain torch AdamW (llm/train/optim.py), the textbook loop of llm/train/local.py."""

    def __init__(self, module: torch.nn.Module, optim: OptimConfig):
        self.module, self.grad_clip = module, optim.grad_clip
        self.optimizer = make_optimizer(module, optim)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def backward_step(self, loss: torch.Tensor) -> float:
        loss.backward()
        params = [p for p in self.module.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def save_state(self, directory: Path, name: str) -> None:
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()},
                   directory / f"{name}.pt")

    def load_state(self, directory: Path, name: str) -> None:
        state = safe_load.load(directory / f"{name}.pt")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class LocalStrategy:
    """Single-process debug mode: rank 0 of 1 on the CPU; every collective is the identity."""

    rank, world, device = 0, 1, torch.device("cpu")
    is_main = True

    def shard(self, n: int) -> slice:
        return shard(n, self.rank, self.world)

    def sum(self, value: float) -> float:
        return value

    def gather(self, items: list) -> list:
        return items

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass

    def prepare(self, module: torch.nn.Module, optim: OptimConfig, zero_stage: int) -> LocalEngine:
        return LocalEngine(module, optim)


class Trainer:
    """`trainer(x)` runs the forward through the engine, `trainer.step(loss)` backpropagates, clips and steps at
    the LR of llm/train/schedule.py (warmup, cosine to optim.min_lr_ratio over total_steps). `module` is the plain
    nn.Module, for generate(), state dicts and evaluation."""

    def __init__(self, engine: ModelEngine, optim: OptimConfig, total_steps: int):
        self.engine, self.optim, self.total_steps = engine, optim, total_steps
        self.module = engine.module
        self.steps = 0

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    def current_lr(self) -> float:
        o = self.optim
        return lr_at(self.steps, o.lr, o.warmup_steps, self.total_steps, o.min_lr_ratio)

    def step(self, loss: torch.Tensor) -> float:
        """One optimizer step at the scheduled LR; returns the gradient norm (ModelEngine.backward_step)."""
        lr = self.current_lr()
        for g in self.engine.optimizer.param_groups:
            g["lr"] = lr
        self.steps += 1
        return self.engine.backward_step(loss)


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    """A model that is only evaluated (reference policy, reward model): eval mode, no gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
