"""Mixed precision for the single-process path: bf16/fp16 autocast over fp32 master weights.

fp16 needs loss scaling (Micikevicius et al. 2018): `torch.amp.GradScaler` multiplies the loss, skips the
optimizer step when a gradient overflows and halves the scale, and grows it again after
`loss_scale_window` clean steps. The DeepSpeed path uses DeepSpeed's own loss scaler, configured from
the same `PrecisionConfig` (parallel/ds_config.py).
"""
from __future__ import annotations

import contextlib

import torch

from llm.config import PrecisionConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(cfg: PrecisionConfig, device: torch.device):
    if cfg.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[cfg.dtype])


def make_scaler(cfg: PrecisionConfig, device: torch.device) -> torch.amp.GradScaler | None:
    if cfg.dtype != "fp16":
        return None
    return torch.amp.GradScaler(device.type, init_scale=cfg.initial_loss_scale, growth_factor=2.0,
                                backoff_factor=0.5, growth_interval=cfg.loss_scale_window)
