"""How an alignment stage trains its models on the runtime it is given (llm/train/runtime.py's `Runtime`, the one
training abstraction pretraining shares: `SingleProcess` in debug mode, parallel/runtime.py's `DistributedRuntime`
under a launcher; the entry point, launch/align_common.py, picks one and passes it in, so no module of llm/align
depends on DeepSpeed or torch.distributed).

Data parallelism is the stages' business: each rank takes its contiguous share of a global batch (`shard`) and
normalises its loss by the global count / world size, so the engine's gradient average is the global mean and a
layout computes debug mode's update.

A stage drives each model it trains through a `Trainer` (its engine stepped at the scheduled learning rate); the
models it only evaluates (reference policy, reward model) are `frozen`.
"""
from __future__ import annotations

import math

import torch

from llm.config import ConfigError, OptimConfig
from llm.train.runtime import Engine, Runtime, SingleProcess, shard  # noqa: F401 (shard: the stages' import)
from llm.train.schedule import lr_at
from typed_yaml.errors import TrainingDiverged


def check_split(key: str, n: int, world: int) -> None:
    """Raise ConfigError unless the `world` data-parallel ranks split the config value `key`=n (a mini-batch)."""
    if n % world:
        raise ConfigError(f"{key}={n} does not split over {world} data-parallel ranks")


# Until the stages name them by their runtime names (llm/train/runtime.py).
Strategy = Runtime
ModelEngine = Engine
LocalStrategy = SingleProcess


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
        """One optimizer step at the scheduled LR; returns the gradient norm before clipping (nan where the engine
        does not report it). A non-finite gradient raises TrainingDiverged naming the first non-finite tensor
        (llm/train/runtime.py `optimizer_step`; the norm is global, so every rank raises together)."""
        lr = self.current_lr()
        for g in self.engine.optimizer.param_groups:
            g["lr"] = lr
        self.steps += 1
        result = self.engine.backward_step(loss)
        norm = float("nan") if result.grad_norm is None else result.grad_norm
        if result.nonfinite is not None or not math.isfinite(norm) and result.grad_norm is not None:
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
