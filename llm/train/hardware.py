"""Device facts for metrics: which device to train on and its peak FLOP/s for MFU.

On a GPU the peak comes from the datasheet table in llm/spec/flops.py. A CPU has no useful datasheet number,
so the peak is measured at start-up by timing large matmuls in the training dtype; MFU on CPU is then
"fraction of what this machine's BLAS reaches", which is what a user can act on.
"""
from __future__ import annotations

import time

import torch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def measure_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024,
                         min_seconds: float = 0.3) -> float:
    """Best-of sustained FLOP/s of an n×n @ n×n matmul in `dtype` on `device`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):  # warm-up: thread pools, cuBLAS handles
        a @ b
    best = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def accelerator_key(device_name: str) -> str | None:
    """Map a CUDA device name ('NVIDIA H100 80GB HBM3') to a key of llm.spec.flops.PEAK_FLOPS, or None."""
    n = device_name.upper()
    for chip in ("H200", "H100", "A100", "V100", "MI300X"):
        if chip in n:
            if chip == "H100":
                return "h100-pcie" if "PCIE" in n else "h100-sxm"
            return chip.lower()
    return None


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number came from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = accelerator_key(name)
        if key is not None:
            from llm.spec.flops import peak_flops as datasheet_peak
            try:
                return datasheet_peak(key, precision), f"datasheet {key} ({name})"
            except ValueError:
                pass
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPU fp16 matmul is emulated; autocast runs the heavy ops in what BLAS offers
    return measure_matmul_flops(device, dtype), f"measured {dtype} matmul peak on {device.type}"
