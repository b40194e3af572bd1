"""Device facts for metrics: which device to train on and its peak FLOP/s for MFU.

On a GPU the peak comes from the datasheet table in llm/cost/flops.py. A CPU has no useful datasheet number,
so its peak is measured by timing large matmuls in the training dtype; MFU on CPU is then "fraction of what
this machine's BLAS reaches", which is what a user can act on. The measurement is taken once per machine,
thread count and dtype and kept in a cache file (CPU_PEAK_CACHE): a run started while the machine is busy
(other ranks starting up, other jobs) would otherwise time a fraction of the peak and report MFU above 100%.
A peak timed while the 1-minute load average said other work held a core is timed again at a later start on a
machine quieter by a core or more, and the better of the two kept; delete the file to measure afresh.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from typed_yaml.files import atomic_write_text

MATMUL_SIZES = (512, 1024, 2048)
"""Square matmul sizes the CPU peak is timed at, the best kept: a BLAS reaches its peak only on large enough
matrices (on 2 cores of this project's CI machine, n=1024 ran at 24 GFLOP/s and n=2048 at 44)."""


def parse_device(text: str, flag: str = "--device") -> torch.device:
    """The torch device `text` names, checked against this machine: ConfigError (one line, naming `flag`) for a name
    torch does not know, CUDA on a PyTorch built without it or on a machine with no GPU visible, or a GPU index past
    those visible. torch would otherwise fail deep inside the first .to() with an assertion."""
    from llm.config import ConfigError
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"{flag} {text}: not a torch device (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise ConfigError(f"{flag} {text}: this PyTorch ({torch.__version__}) is built without CUDA; use "
                              f"{flag} cpu, or install a CUDA build of PyTorch")
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"{flag} {text}: no GPU is visible (CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use {flag} cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{flag} {text}: only {count} GPU(s) visible (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {text}: MPS is not available on this machine; use {flag} cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{flag} {text}: device type {device.type!r} is not supported here (cpu, cuda, mps)")
    return device


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def measure_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32,
                         sizes: tuple[int, ...] = MATMUL_SIZES, min_seconds: float = 0.3) -> float:
    """Best sustained FLOP/s of n×n @ n×n matmuls in `dtype` on `device`, timed for `min_seconds` at each n of
    `sizes` in turn. A size whose single matmul takes longer than `min_seconds` ends the sweep, so an emulated
    dtype (bf16 on a CPU without native support: a few GFLOP/s) costs seconds, not minutes."""
    reps = 4 if device.type == "cuda" else 1  # a GPU matmul is shorter than the synchronisation around it
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up: thread pools, cuBLAS handles
        start = time.perf_counter()
        while True:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / reps
            best = max(best, 2 * n ** 3 / dt)
            if time.perf_counter() - start >= min_seconds:
                break
        if dt > min_seconds:
            break
    return best


def cpu_peak_cache() -> Path:
    """The cache file of measured CPU peaks: $LLM_FORGE_CACHE/cpu_peak.json (default ~/.cache/llm-forge)."""
    root = os.environ.get("LLM_FORGE_CACHE") or Path.home() / ".cache" / "llm-forge"
    return Path(root) / "cpu_peak.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BUSY_LOAD = 1.0
"""A 1-minute load average from this much up means other work held at least a core while the peak was timed."""


def _busy(entry: dict) -> str:
    """A warning for a peak timed while other work kept a core busy (load average of BUSY_LOAD or more)."""
    load, cores = entry.get("load_avg_1min"), entry.get("cores")
    if isinstance(load, (int, float)) and load >= BUSY_LOAD:
        return f" while the machine was busy (load average {load:.1f} on {cores} cores: the peak may be low)"
    return ""


def _quieter(load: float | None, entry: dict) -> bool:
    """Whether the machine is now quieter than when `entry` was timed by a whole core of load: only then is timing
    again worth its second (every rank of every run starts here; a test suite starts hundreds on a busy machine)."""
    then = entry.get("load_avg_1min")
    return load is not None and isinstance(then, (int, float)) and load <= then - 1.0


def cpu_peak_flops(dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s of this CPU at torch's current thread count in `dtype`, where it came from): the cached
    measurement of this machine (module docstring), else a new one, cached. A cache that cannot be read or
    written is measured around, never an error."""
    threads = torch.get_num_threads()
    name = str(dtype).removeprefix("torch.")
    key = f"{platform.node()} | {_cpu_model()} | {threads} threads | {name}"
    what = f"{name} matmul peak of this CPU on {threads} threads"
    path = cpu_peak_cache()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    old = cache.get(key)
    if not (isinstance(old, dict) and isinstance(old.get("flops"), (int, float)) and old["flops"] > 0):
        old = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if old is not None and not (_busy(old) and _quieter(load, old)):
        return float(old["flops"]), f"{what}, measured {old.get('when', '')}{_busy(old)} (cached in {path})"
    # No peak yet, or one timed on a busier machine than now: time it (again), and keep the better of the two.
    flops = measure_matmul_flops(torch.device("cpu"), dtype)
    if old is not None and old["flops"] >= flops:
        return float(old["flops"]), f"{what}, measured {old.get('when', '')}{_busy(old)} (cached in {path})"
    entry = {"flops": flops, "when": time.strftime("%Y-%m-%d %H:%M"), "load_avg_1min": load, "cores": os.cpu_count()}
    cache[key] = entry
    what += f", measured now{_busy(entry)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cache, indent=1))  # ranks of several jobs may write at once
    except OSError:
        return flops, f"{what} ({path} is not writable)"
    return flops, f"{what} (cached in {path}; delete it to measure again)"


def accelerator_key(device_name: str) -> str | None:
    """Map a CUDA device name ('NVIDIA H100 80GB HBM3') to a key of llm.cost.flops.PEAK_FLOPS, or None."""
    n = device_name.upper()
    for chip in ("H200", "H100", "A100", "V100", "MI300X"):
        if chip in n:
            if chip == "H100":
                return "h100-pcie" if "PCIE" in n else "h100-sxm"
            return chip.lower()
    return None


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s of one torch device, where the number came from): the datasheet's for a listed GPU
    (llm/cost/flops.py `datasheet_peak_flops`), else timed on this machine."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = accelerator_key(name)
        if key is not None:
            from llm.cost.flops import datasheet_peak_flops
            try:
                return datasheet_peak_flops(key, precision), f"datasheet {key} ({name})"
            except ValueError:
                pass
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu":
        if dtype == torch.float16:
            dtype = torch.float32  # CPU fp16 matmul is emulated; autocast runs the heavy ops in what BLAS offers
        return cpu_peak_flops(dtype)
    return measure_matmul_flops(device, dtype), f"measured {dtype} matmul peak on {device.type}"


def cpu_plan_peak() -> tuple[float, str]:
    """(this CPU's fp32 matmul peak in FLOP/s, the device's name in a plan): what `llm-forge plan --gpu cpu` times
    against, since a CPU trains in fp32 (the config it writes says so). Timed once and cached, as `peak_flops`."""
    peak, _ = peak_flops(torch.device("cpu"), "fp32")
    return peak, f"cpu ({torch.get_num_threads()} threads, fp32 peak measured)"
