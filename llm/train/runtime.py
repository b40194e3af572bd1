"""The one training abstraction that pretraining and alignment share: a `Runtime` (this process's place in the job,
the collectives over its ranks, and `prepare`: a module → an `Engine` that trains it), the one single-process
optimizer step with its non-finite diagnosis, and the `Trainer` that steps an engine at the scheduled learning rate.

`SingleProcess` (here) is debug mode: rank 0 of a world of one, identity collectives, plain torch AdamW; it is the
only name the code gives a single process (a checkpoint's layout still records it as backend "local", for old
checkpoints). parallel/runtime.py's `DistributedRuntime` is a rank of a launched job: torch.distributed collectives,
one DeepSpeed engine per prepared module. The pretraining backends are these runtimes with the loop's steps on top
(llm/train/backend.py); an alignment stage is handed one by its entry point and trains each model through a
`Trainer`, keeping the models it only evaluates `frozen`. So no module of llm/ imports torch.distributed or
DeepSpeed.

Collectives are over the data-parallel ranks (`dp_rank` of `dp_size`, a subgroup under tensor or pipeline
parallelism; every rank in alignment). Each rank takes its contiguous share of a global batch (`shard`) and
normalises its loss by the global count over dp_size, so the engine's gradient average is the global mean and every
layout computes debug mode's update.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from llm.config import ConfigError, OptimConfig
from llm.train import safe_load
from llm.train.optim import make_optimizer
from llm.train.schedule import lr_at
from typed_yaml.errors import TrainingDiverged


@dataclass
class StepResult:
    loss: float
    """Mean training loss over the global batch (before loss scaling)."""
    grad_norm: float | None
    """Global gradient norm before clipping; None where the engine cannot see it."""
    skipped: bool = False
    """True when fp16 overflow made the optimizer skip this step."""
    loss_scale: float | None = None
    nonfinite: str | None = None
    """For a NaN/inf loss or gradient: the first non-finite parameter or gradient, found before the optimizer step
    (which was then not taken)."""


class Engine(Protocol):
    """One trainable model as a runtime prepared it."""

    module: torch.nn.Module
    """The plain nn.Module: generate(), state dicts and evaluation read it."""
    optimizer: torch.optim.Optimizer
    """Its param_groups' "lr" is set by the caller before each step."""

    def __call__(self, *args, **kwargs): ...

    def train(self, mode: bool = True) -> None: ...

    def backward_step(self, loss: torch.Tensor) -> StepResult:
        """Backward, clip to optim.grad_clip, optimizer step, gradients cleared; the global gradient norm before
        clipping (None where the engine does not report it). A non-finite gradient is named in `nonfinite`; where
        the engine can see it before stepping (a single process), the step is not taken."""

    def save_state(self, directory: Path, name: str) -> None:
        """Write the weights and optimizer state as files `<name>.*` under `directory` (an in-stage checkpoint,
        llm/align/resume.py); every rank calls it and writes its share."""

    def load_state(self, directory: Path, name: str) -> None:
        """Restore what `save_state` wrote, exactly (every file read with weights_only=True)."""


class Runtime(Protocol):
    """This process's place in the job and what it can ask of the others. Every collective must be called on every
    rank in the same order."""

    rank: int
    """Global rank of this process (0 in a single process)."""
    world: int
    """Number of ranks in the job."""
    dp_rank: int
    dp_size: int
    """Data-parallel coordinate and degree: which share of each global batch this rank takes."""
    device: torch.device
    """Where this rank's inputs go."""
    is_main: bool
    """True on the one rank that writes the shared files (rank 0)."""

    def shard(self, n: int) -> slice:
        """This rank's contiguous data-parallel share of n items (ConfigError unless dp_size divides n)."""

    def sum(self, value: float) -> float:
        """Sum of a float over the data-parallel ranks."""

    def gather(self, items: list) -> list:
        """The concatenation over the data-parallel ranks, in rank order, of each rank's list of picklable items:
        the global batch rebuilt from the ranks' contiguous shares."""

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """torch.cat over the data-parallel ranks, in rank order, of each rank's (rows, ...) tensor; every rank's
        shape is equal."""

    def barrier(self) -> None:
        """Wait for every rank."""

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when flag is true on at least one."""

    def first_rank_with(self, flag: bool) -> int | None:
        """On every rank: the lowest rank where flag is true, or None when it is true nowhere."""

    def prepare(self, module: torch.nn.Module, optim: OptimConfig, zero_stage: int) -> Engine:
        """`module` ready to train with AdamW from `optim`; zero_stage is ignored where there is no sharding."""

    def close(self) -> None:
        """End the job's process group (after a barrier); nothing in a single process."""


def shard(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous share of n items. Raises ConfigError unless world divides n."""
    if n % world:
        raise ConfigError(f"batch of {n} does not split over {world} data-parallel ranks")
    per = n // world
    return slice(rank * per, (rank + 1) * per)


def check_split(key: str, n: int, world: int) -> None:
    """Raise ConfigError unless the `world` data-parallel ranks split the config value `key`=n (a stage's
    mini-batch)."""
    if n % world:
        raise ConfigError(f"{key}={n} does not split over {world} data-parallel ranks")


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


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, loss: float,
                   scaler: torch.amp.GradScaler | None = None) -> StepResult:
    """The single-process optimizer step, after backward: clip to grad_clip (none when ≤ 0), step, clear the
    gradients. `loss` is the step's mean loss, for the result.

    Without a loss scaler a non-finite loss or gradient norm is diagnosed before stepping (afterwards every
    parameter would be NaN and the culprit lost) and the step is not taken: the weights stay as they were. With
    one (fp16) an overflow is the scaler's to handle: it skips the step and lowers the scale."""
    if not scaler and not math.isfinite(loss):
        where = first_nonfinite(model)
        optimizer.zero_grad(set_to_none=True)
        return StepResult(loss, float("nan"), nonfinite=where)
    if scaler:
        scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    if not scaler and not torch.isfinite(grad_norm):
        # A finite loss with non-finite gradients: name the culprit while the gradients are still the ones backward
        # produced, and leave the weights as they were.
        where = first_nonfinite(model)
        optimizer.zero_grad(set_to_none=True)
        return StepResult(loss, float(grad_norm), nonfinite=where)
    if grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, grad_norm)  # clip_grad_norm_'s second half
    skipped, scale = False, None
    if scaler:
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips the step if unscale_ found inf/NaN
        scaler.update()
        skipped = scaler.get_scale() < scale
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, float(grad_norm), skipped, scale)


class SingleProcessEngine:
    """A module trained in this process: plain torch AdamW (llm/train/optim.py) and `optimizer_step`."""

    def __init__(self, module: torch.nn.Module, optim: OptimConfig):
        self.module, self.grad_clip = module, optim.grad_clip
        self.optimizer = make_optimizer(module, optim)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def backward_step(self, loss: torch.Tensor) -> StepResult:
        loss.backward()
        return optimizer_step(self.module, self.optimizer, self.grad_clip, float(loss.detach()))

    def save_state(self, directory: Path, name: str) -> None:
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()},
                   directory / f"{name}.pt")

    def load_state(self, directory: Path, name: str) -> None:
        state = safe_load.load(directory / f"{name}.pt")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class SingleProcess:
    """Debug mode's runtime: rank 0 of a world of one, on `device`; every collective is the identity."""

    rank = dp_rank = 0
    world = dp_size = 1
    is_main = True

    def __init__(self, device: torch.device | None = None):
        self.device = device or torch.device("cpu")

    def shard(self, n: int) -> slice:
        return slice(0, n)

    def sum(self, value: float) -> float:
        return value

    def gather(self, items: list) -> list:
        return items

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def barrier(self) -> None:
        pass  # one process: nothing to wait for

    def any_rank(self, flag: bool) -> bool:
        return flag

    def first_rank_with(self, flag: bool) -> int | None:
        return 0 if flag else None

    def prepare(self, module: torch.nn.Module, optim: OptimConfig, zero_stage: int) -> SingleProcessEngine:
        return SingleProcessEngine(module, optim)

    def close(self) -> None:
        pass


class Trainer:
    """`trainer(x)` runs the forward through the engine, `trainer.step(loss)` backpropagates, clips and steps at
    the LR of llm/train/schedule.py (warmup, cosine to optim.min_lr_ratio over total_steps). `module` is the plain
    nn.Module, for generate(), state dicts and evaluation."""

    def __init__(self, engine: Engine, optim: OptimConfig, total_steps: int):
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
        """One optimizer step at the scheduled LR; returns the gradient norm before clipping (nan where the engine
        does not report it). A non-finite gradient raises TrainingDiverged naming the first non-finite tensor
        (llm/train/runtime.py `optimizer_step`; the norm is global, so every rank raises together)."""
        lr = self.current_lr()
        for g in self.engine.optimizer.param_groups:
            g["lr"] = lr
        self.steps += 1
        result = self.engine.backward_step(loss)
        norm = float("nan") if result.grad_norm is None else result.grad_norm
        if result.nonfinite is not None or result.grad_norm is not None and not math.isfinite(result.grad_norm):
            raise TrainingDiverged(f"non-finite loss or gradient at optimizer step {self.steps} (loss "
                                   f"{result.loss}, gradient norm {norm}); first non-finite: "
                                   f"{result.nonfinite or 'none (only the loss is)'}; lower optim.lr or check the "
                                   f"data, then rerun: the stage resumes from its last checkpoint")
        return norm


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    """A model that is only evaluated (reference policy, reward model): eval mode, no gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
