"""One trainable model and its optimizer, in debug mode (plain torch AdamW) or under DeepSpeed.

Every alignment stage trains through `Trainer`: `trainer(x)` runs the forward, `trainer.step(loss, lr)`
backpropagates, clips and steps. In debug mode that is the textbook loop of llm/train/local.py; under the
launcher the module is wrapped by parallel/engine.py's `initialize_engine` (the one `deepspeed.initialize`),
which averages gradients over the data-parallel ranks and shards optimizer states by ZeRO stage.

Data parallelism is the stages' business: each rank takes its share of a global batch (`Dist.shard`) and
normalises its loss by the global count / world size, so the engine's gradient average is the global mean
and a layout computes the same update as debug mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llm.align.config import OptimSettings
from llm.train.optim import param_groups
from llm.train.schedule import lr_at


@dataclass
class Dist:
    """This process's place in a data-parallel job; `Dist()` is single-process debug mode."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    deepspeed: bool = False
    """Train through DeepSpeed engines (set under the launcher)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (n divisible by world, checked)."""
        if n % self.world:
            raise ValueError(f"batch of {n} does not split over {self.world} data-parallel ranks")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def sum(self, value: float) -> float:
        """Sum of a float over ranks (identity in debug mode)."""
        if self.world == 1:
            return value
        import torch.distributed as dist
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def gather(self, items: list) -> list:
        """The concatenation over ranks, in rank order, of each rank's list of picklable items (the list itself
        in debug mode): the global batch rebuilt from the ranks' contiguous shares."""
        if self.world == 1:
            return items
        import torch.distributed as dist
        parts: list = [None] * self.world
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """torch.cat over ranks, in rank order, of each rank's (rows, ...) tensor; every rank's shape is equal."""
        if self.world == 1:
            return t
        import torch.distributed as dist
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self.deepspeed:
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()


def setup_dist() -> Dist:
    """Debug mode under plain `python`; under a launcher, the process group (gloo with DeepSpeed's CPU
    accelerator when there is no CUDA) through parallel/engine.py's `init_distributed`."""
    from parallel.launch_env import detect_launch
    launch = detect_launch()
    if launch.mode == "python":
        return Dist()
    from parallel.process_group import init_distributed
    device = init_distributed(launch)
    return Dist(launch.rank, launch.world_size, device, deepspeed=True)


class Trainer:
    """A model being trained. `module` is the plain nn.Module (for generate(), state dicts and evaluation)."""

    def __init__(self, module: torch.nn.Module, settings: OptimSettings, total_steps: int, dist: Dist | None = None):
        self.settings, self.total_steps = settings, total_steps
        self.dist = dist or Dist()
        self.steps = 0
        if self.dist.deepspeed:
            from parallel.engine import initialize_engine
            self.engine = initialize_engine(module, _ds_config(settings, self.dist.world))
            self.module = self.engine.module
            self.optimizer = self.engine.optimizer
        else:
            self.engine = None
            self.module = module
            # foreach=False as in llm/train/local.py: the update order of DeepSpeed's torch AdamW on CPU.
            self.optimizer = torch.optim.AdamW(param_groups(module, settings.weight_decay), lr=settings.lr,
                                               betas=(0.9, 0.95), eps=1e-8, foreach=False)

    def __call__(self, *args, **kwargs):
        return (self.engine or self.module)(*args, **kwargs)

    def train(self, mode: bool = True) -> None:
        (self.engine or self.module).train(mode)

    def current_lr(self) -> float:
        s = self.settings
        return lr_at(self.steps, s.lr, s.warmup_steps, self.total_steps, s.min_lr_ratio)

    def step(self, loss: torch.Tensor) -> float:
        """Backward, clip to settings.grad_clip, optimizer step at the scheduled LR; returns the gradient norm."""
        lr = self.current_lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.steps += 1
        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        loss.backward()
        params = [p for p in self.module.parameters() if p.grad is not None]
        clip = self.settings.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)


def _ds_config(settings: OptimSettings, world: int) -> dict:
    """The DeepSpeed JSON for one model, generated by parallel/ds_config.py from a RunConfig holding its
    optimizer settings. Batch sizes are bookkeeping only (we call forward/backward/step ourselves, one
    micro-batch per rank per step): global = world, micro = 1, no accumulation."""
    from llm.config import OptimConfig, ParallelConfig, RunConfig, TrainConfig
    from parallel.ds_config import deepspeed_config
    cfg = RunConfig(optim=OptimConfig(lr=settings.lr, weight_decay=settings.weight_decay,
                                      grad_clip=settings.grad_clip, warmup_steps=settings.warmup_steps),
                    train=TrainConfig(max_steps=1, global_batch_size=world, micro_batch_size=1),
                    parallel=ParallelConfig(zero_stage=settings.zero_stage))
    return deepspeed_config(cfg, world)


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    """A model that is only evaluated (reference policy, reward model): eval mode, no gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
