"""A model being trained by a stage: its engine (from the strategy) stepped at the scheduled learning rate; and
the frozen models (reference policy, reward model) that are only evaluated."""
from __future__ import annotations

import torch

from llm.align.strategy import ModelEngine
from llm.config import OptimConfig
from llm.train.schedule import lr_at


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
