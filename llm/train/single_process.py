"""The single-process backend (debug mode): plain PyTorch AdamW, accumulation, clipping, autocast, fp16 scaling.

It is the `Backend` (llm/train/backend.py) that the training loop (llm/train/loop.py) drives in a single process,
on llm/train/runtime.py's `SingleProcess` runtime and `optimizer_step`; parallel/engine.py provides the DeepSpeed
one. This one is deliberately the textbook loop, so `bench/` can hold it against a hand-written PyTorch loop and the
parallel engine can be checked against it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from llm.config import RunConfig
from llm.model import Transformer
from llm.train import precision as prec
from llm.train import safe_load
from llm.train.compile import compile_model
from llm.train.inputs import document_eos, split_batch
from llm.train.optim import make_optimizer
from llm.train.runtime import SingleProcess, StepResult, first_nonfinite, first_nonfinite_state, optimizer_step


class SingleProcessBackend(SingleProcess):
    """The whole model on one device: rank 0 of a world of one."""

    layout = {"backend": "local"}

    def __init__(self, cfg: RunConfig, device: torch.device):
        super().__init__(device)
        self.cfg = cfg
        self.model = Transformer(cfg.model, seed=cfg.train.seed)
        if cfg.checkpoint.init_from:
            from llm.train.checkpoint import load_model_weights
            load_model_weights(self.model, cfg.checkpoint.init_from)
        self.model.to(device)
        self.routing = self.model.routing if cfg.model.moe is not None else None
        if cfg.train.compile:
            compile_model(self.model)
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.scaler = prec.make_scaler(cfg.precision, device)
        self.eos_id = document_eos(cfg)

    def train_step(self, micro_batches: list[torch.Tensor], lr: float) -> StepResult:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        total = 0.0
        n = len(micro_batches)
        for batch in micro_batches:
            inputs, targets, kw = split_batch(batch.to(self.device, non_blocking=True), self.eos_id)
            with prec.autocast(self.cfg.precision, self.device):
                loss = self.model.lm_loss(inputs, targets, **kw)
                objective = loss + self.model.moe_loss()  # the MoE auxiliary losses train, not logged as the loss
            scaled = objective / n
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.item()
        return optimizer_step(self.model, self.optimizer, self.cfg.optim.grad_clip, total / n, self.scaler)

    @torch.no_grad()
    def eval_loss(self, micro_batches: list[torch.Tensor]) -> float:
        self.model.eval()
        losses = []
        for batch in micro_batches:
            inputs, targets, kw = split_batch(batch.to(self.device), self.eos_id)
            with prec.autocast(self.cfg.precision, self.device):
                losses.append(self.model.lm_loss(inputs, targets, **kw).item())
        return sum(losses) / len(losses)

    def diagnose_nonfinite(self) -> str | None:
        return first_nonfinite(self.model) or first_nonfinite_state(self.optimizer)

    def can_reshard(self, saved: dict, current: dict) -> tuple[bool, str]:
        return False, "only the DeepSpeed backend reshards optimizer state"

    def save(self, path: Path) -> None:
        # Through Python file objects: a full disk then surfaces with its errno (ENOSPC) behind torch's
        # 'enforce fail' RuntimeError, which a path would hide behind "basic_ios::clear" (typed_yaml/disk.py).
        with open(path / "model.pt", "wb") as f:
            torch.save(self.model.state_dict(), f)
        with open(path / "optimizer.pt", "wb") as f:
            torch.save({"optimizer": self.optimizer.state_dict(),
                        "scaler": self.scaler.state_dict() if self.scaler else None}, f)

    def load(self, path: Path, weights_only: bool = False) -> None:
        self.model.load_state_dict(safe_load.load(path / "model.pt", map_location=self.device))
        if weights_only:
            return
        state = safe_load.load(path / "optimizer.pt", map_location=self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
