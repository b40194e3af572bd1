"""Predicted vs measured peak memory of this rank, for the start-up line and every metrics.jsonl row.

The prediction is llm/cost/memory.py's tensor count for the run's layout (no framework allowance: the CUDA
allocator's peak does not see the CUDA context either). The measurement on a GPU is
`torch.cuda.max_memory_allocated`, the caching allocator's peak since start. On a CPU it is skipped: the
tensor accounting the calibration uses (tests/parallel/layout_memory_probe.py) profiles every allocation of a
step, far too slow to run on every step, so CPU rows carry the prediction only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.config import RunConfig
from llm.cost.layout import Layout
from llm.cost.memory import DEFAULT_REDUCE_BUCKET_SIZE, MemoryPerGPU, memory_per_gpu


def run_layout(cfg: RunConfig, dp: int) -> Layout:
    """The llm.cost Layout of a run config at data-parallel degree dp (world / (tensor × pipeline × context))."""
    p = cfg.parallel
    return Layout(p.tensor, p.pipeline, dp, p.zero_stage, cfg.train.micro_batch_size, p.recompute_interval,
                  p.sequence_parallel, p.offload_optimizer, p.expert, p.context, p.tiled_mlp)


def predict_run_memory(cfg: RunConfig, dp: int, device: torch.device) -> MemoryPerGPU:
    """llm/cost/memory.py's prediction for this run (its DeepSpeed bucket size, torch's AdamW kernels there)."""
    bucket = cfg.parallel.deepspeed.get("zero_optimization", {}).get("reduce_bucket_size",
                                                                     DEFAULT_REDUCE_BUCKET_SIZE)
    return memory_per_gpu(cfg.model, run_layout(cfg, dp), cfg.train.global_batch_size,
                          reduce_bucket_size=int(bucket), framework_bytes=0, fragmentation=0.0,
                          foreach_adam=device.type == "cuda", document_mask=cfg.data.document_mask)


@dataclass
class MemoryWatch:
    predicted_bytes: int
    device: torch.device

    def peak_bytes(self) -> int | None:
        """This rank's allocator peak so far (GPU); None on a CPU (module docstring)."""
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def row(self) -> dict:
        out = {"memory_predicted_bytes": self.predicted_bytes}
        peak = self.peak_bytes()
        if peak is not None:
            out["memory_peak_bytes"] = peak
        return out
