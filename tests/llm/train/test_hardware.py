"""llm/train/hardware.py: the CPU peak MFU divides by is measured once per machine and kept, not re-timed under load."""
import json

import torch

from llm.train.hardware import cpu_peak_cache, measure_matmul_flops, peak_flops
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_cpu_peak_is_measured_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_FORGE_CACHE", str(tmp_path))
    first, source = peak_flops(torch.device("cpu"), "fp32")
    assert first > 0 and "measured now" in source and cpu_peak_cache() == tmp_path / "cpu_peak.json"
    cache = json.loads(cpu_peak_cache().read_text())
    (key,) = cache
    assert key.endswith(f"| {torch.get_num_threads()} threads | float32") and cache[key]["flops"] == first
    # A later run (started while the machine is busy) takes the peak stored from a quiet machine instead of
    # timing a fraction of it.
    cache[key].update(flops=123e9, load_avg_1min=0.1)
    cpu_peak_cache().write_text(json.dumps(cache))
    again, source = peak_flops(torch.device("cpu"), "fp32")
    assert again == 123e9 and "cached in" in source


def _store(key_flops: float, load: float):
    cache = json.loads(cpu_peak_cache().read_text())
    for entry in cache.values():
        entry.update(flops=key_flops, load_avg_1min=load, cores=2)
    cpu_peak_cache().write_text(json.dumps(cache))


def test_a_peak_timed_on_a_busy_machine_is_timed_again_when_quieter_and_the_better_kept(tmp_path, monkeypatch):
    import os
    monkeypatch.setenv("LLM_FORGE_CACHE", str(tmp_path))
    peak_flops(torch.device("cpu"), "fp32")
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # now: a core quieter than the stored 9.0
    _store(1e18, 9.0)  # busy, but better than any CPU here: kept, and said to be from a busy machine
    peak, source = peak_flops(torch.device("cpu"), "fp32")
    assert peak == 1e18 and "while the machine was busy (load average 9.0 on 2 cores" in source
    _store(1.0, 3.5)  # busy and too low, but the machine is no quieter now: not worth a second timing
    peak, source = peak_flops(torch.device("cpu"), "fp32")
    assert peak == 1.0 and "measured now" not in source
    _store(1.0, 9.0)  # busy, too low, and the machine is quieter now: replaced by the new timing
    peak, _ = peak_flops(torch.device("cpu"), "fp32")
    (entry,) = json.loads(cpu_peak_cache().read_text()).values()
    assert peak == entry["flops"] > 1.0 and entry["load_avg_1min"] == 3.0


def test_an_unwritable_cache_is_measured_around(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LLM_FORGE_CACHE", str(tmp_path / "file" / "sub"))
    peak, source = peak_flops(torch.device("cpu"), "fp32")
    assert peak > 0 and "is not writable" in source


def test_a_slow_size_ends_the_sweep():
    """Each size is timed for min_seconds; one whose single matmul takes longer is the last (emulated dtypes)."""
    import time
    t0 = time.perf_counter()
    assert measure_matmul_flops(torch.device("cpu"), torch.float32, sizes=(64, 128), min_seconds=0.05) > 0
    assert time.perf_counter() - t0 < 2
