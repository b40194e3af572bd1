"""Single-process debug mode: the whole run on one device (CPU or one GPU), no launcher, no DeepSpeed."""
from __future__ import annotations

from pathlib import Path

import torch

from llm.config import ConfigError, RunConfig
from llm.shape import count_active_params
from llm.train import start
from llm.train.hardware import default_device, peak_flops
from llm.train.single_process import SingleProcessBackend
from llm.train.loop import TrainOutcome
from typed_yaml.log import info


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""/proc/cpuinfo flags of CPU instructions that compute in bf16: x86's AVX512-BF16 and AMX (Cooper Lake, Sapphire
Rapids and later; Zen 4) and Arm's BF16 extension (aarch64 lists it under Features). Without them torch's CPU kernels
emulate bf16 arithmetic: a 256×256 bf16 matmul took 34x the fp32 one on an AVX2-only CPU, and a debug
step ran ~170 s in bf16 against seconds in fp32."""


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has bf16 instructions (BF16_CPU_FLAGS); None where /proc/cpuinfo cannot say (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = {f for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for f in line.partition(":")[2].split()}
    return any(f in flags for f in BF16_CPU_FLAGS)


def precision_warning(dtype: str, device: torch.device, fast_bf16: bool | None) -> str | None:
    """The start-up warning for a precision this device computes slowly, or None."""
    if dtype == "bf16" and device.type == "cpu" and fast_bf16 is False:
        return ("warning: precision=bf16 on a CPU without bf16 instructions (none of avx512_bf16, amx_bf16 in "
                "/proc/cpuinfo): every matmul is emulated, steps run tens of times slower than fp32; use "
                "precision=fp32")
    return None


def run_debug(cfg: RunConfig, device: torch.device | None = None, eval_only: bool = False) -> TrainOutcome:
    """Train (or evaluate) `cfg` in this process on `device` (default: llm/train/hardware.py's); its lines go to the
    console through typed_yaml/log.py."""
    p = cfg.parallel
    if p.tensor > 1 or p.pipeline > 1:
        raise ConfigError(f"parallel.tensor={p.tensor} × parallel.pipeline={p.pipeline} needs "
                          f"{p.tensor * p.pipeline} ranks, but this is single-process debug mode: launch with "
                          f"`deepspeed --num_gpus {p.tensor * p.pipeline} launch/pretrain.py ...`")
    device = device or default_device()
    if cfg.precision.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision=bf16 but this GPU has no bf16 support; use precision=fp16")

    slow = precision_warning(cfg.precision.dtype, device, cpu_has_fast_bf16() if device.type == "cpu" else None)
    if slow:  # before the model is built and the peak measured in bf16, which are slow already
        info(slow)

    def announce(backend: SingleProcessBackend, peak: float, source: str) -> None:
        n_params = sum(p.numel() for p in backend.model.parameters())
        active = f" ({count_active_params(cfg.model) / 1e6:.2f}M active per token)" if cfg.model.moe else ""
        info(f"debug mode on {device}: {n_params / 1e6:.2f}M parameters{active}, {cfg.total_steps} steps of "
             f"{cfg.tokens_per_step} tokens, precision {cfg.precision.dtype}; MFU against {peak / 1e12:.2f} TFLOP/s "
             f"({source})")

    return start.run(cfg, lambda: SingleProcessBackend(cfg, device), lambda: peak_flops(device, cfg.precision.dtype),
                     announce, eval_only=eval_only)
