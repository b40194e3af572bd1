"""Single-process debug mode: the whole run on one device (CPU or one GPU), no launcher, no DeepSpeed."""
from __future__ import annotations

import torch

from llm.config import ConfigError, RunConfig
from llm.train import start
from llm.train.hardware import default_device, peak_flops
from llm.train.local import LocalBackend
from llm.train.loop import TrainOutcome


def run_debug(cfg: RunConfig, device: torch.device | None = None, log=print, eval_only: bool = False) -> TrainOutcome:
    p = cfg.parallel
    if p.tensor > 1 or p.pipeline > 1:
        raise ConfigError(f"parallel.tensor={p.tensor} × parallel.pipeline={p.pipeline} needs "
                          f"{p.tensor * p.pipeline} ranks, but this is single-process debug mode: launch with "
                          f"`deepspeed --num_gpus {p.tensor * p.pipeline} launch/pretrain.py ...`")
    device = device or default_device()
    if cfg.precision.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision=bf16 but this GPU has no bf16 support; use precision=fp16")

    def announce(backend: LocalBackend, peak: float, source: str) -> None:
        n_params = sum(p.numel() for p in backend.model.parameters())
        log(f"debug mode on {device}: {n_params / 1e6:.2f}M parameters, {cfg.total_steps} steps of "
            f"{cfg.tokens_per_step} tokens, precision {cfg.precision.dtype}; MFU against {peak / 1e12:.2f} TFLOP/s "
            f"({source})")

    return start.run(cfg, lambda: LocalBackend(cfg, device), lambda: peak_flops(device, cfg.precision.dtype),
                     announce, log=log, eval_only=eval_only)
