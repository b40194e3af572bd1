"""A launched run states its predicted memory and step time at start-up, and its metrics rows carry the
prediction (llm/train/memory_watch.py); on CPU the per-step peak is not measured (too slow: see there)."""
import json

from llm.config import load_config
from llm.train.memory_watch import predict_run_memory
from tests.parallel.launcher_utils import (launcher_config_dict, read_metrics, run_deepspeed,
                                           write_config)


def test_launched_run_reports_predicted_memory(tiny_data, tmp_path):
    import torch
    data = tiny_data
    cfg = launcher_config_dict(data, tmp_path / "unused", train={"max_steps": 2, "log_every": 1},
                               precision="bf16")
    config = write_config(tmp_path / "cfg.yaml", cfg)
    out = tmp_path / "run"
    launch = run_deepspeed(config, out, 2, ["parallel.zero_stage=1"])
    predicted = predict_run_memory(load_config(config, ["parallel.zero_stage=1"]), 2, torch.device("cpu"))
    expected = predicted.tensors
    # On CPU the headline is the resident part: DeepSpeed's full-size buckets minus the pages no gradient writes.
    assert predicted.resident < expected
    assert f"predicted peak memory per rank {predicted.resident / 1e9:.3f} GB resident" in launch.output
    assert f"buckets_filled {predicted.buckets_filled / 1e9:.3f}" in launch.output
    assert "no step-time prediction for cpu" in launch.output
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert rows and all(r["memory_predicted_bytes"] == expected for r in rows)
    assert not any("memory_peak_bytes" in r for r in rows)
    summary = json.loads((out / "memory.json").read_text())
    assert summary["memory_predicted_bytes"] == expected and summary["memory_peak_bytes_by_rank"] == [None, None]
