"""Choose the layout of a run on a cluster: enumerate what the world size allows, predict memory and step time,
drop what does not fit, pick the fastest.

Enumerated (each rule is a reason a candidate is rejected, reported by `--explain`):
  * tp: divisors of gpus_per_node (tensor parallelism stays within a node: it all-reduces 4 times per block)
    that divide the world and, as check_layout requires, n_heads, n_kv_heads, vocab_size and d_ff;
    sequence parallelism on or off when tp > 1;
  * pp: divisors of world / tp that divide n_layers (equal stages; DeepSpeed would accept uneven ones, we do
    not plan them); dp is the rest;
  * ZeRO 0-3, pipeline with 0-1 only (DeepSpeed's pipeline engine);
  * micro-batch sizes dividing the per-rank batch global_batch_size / dp;
  * activation checkpointing none, every 2nd block, every block;
  * optimizer offload (ZeRO >= 1) only when nothing fits without it;
  * for a mixture-of-experts model, expert-parallel degrees ep dividing both dp and the experts (AutoEP refuses
    tensor and pipeline parallelism, so those layouts are rejected by rule);
  * context-parallel degrees C (DeepSpeed Ulysses) dividing world / (tp·pp) that llm.config.parallel
    `context_layout_errors` allows (C divides seq_len and the heads per TP rank; no pipeline, no MoE); dp is then
    world / (tp·pp·C). Rule-breaking degrees are not enumerated: they would only crowd --explain.
Ties in step time go to less recomputation, a larger micro-batch (better kernels than this model knows of),
less ZeRO, less TP, less PP and less context parallelism, in that order. No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm.config import ModelConfig
from llm.config.parallel import context_layout_errors
from llm.cost.layout import Layout, layout_errors
from llm.cost.memory import FRAGMENTATION, FRAMEWORK_BYTES, MemoryPerGPU, memory_per_gpu
from llm.cost.step_time import StepTime, step_time
from typed_yaml import ConfigError

CHECKPOINT_INTERVALS = (0, 2, 1)


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    memory: MemoryPerGPU | None
    time: StepTime | None
    rejected: str | None
    """Why the layout cannot run (a broken rule, or 'needs X GB > Y GB'); None for one that fits."""

    def sort_key(self) -> tuple:
        lay = self.layout
        # At equal time, sequence parallelism (same communication volume as plain TP, less memory) goes first.
        return (float(f"{self.time.total_s:.4g}"), lay.recompute_every_k != 0, -lay.recompute_every_k,
                -lay.micro_batch_size, lay.zero_stage, lay.offload_optimizer, lay.tp, not lay.sequence_parallel,
                lay.pp, lay.context, lay.ep)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def context_degrees(cfg: ModelConfig, ranks: int, tp: int, pp: int) -> list[int]:
    """Context-parallel degrees the rules allow (`context_layout_errors`) among the divisors of `ranks`."""
    return [c for c in _divisors(ranks) if not context_layout_errors(cfg, c, tp, pp)]


def enumerate_layouts(cfg: ModelConfig, world_size: int, gpus_per_node: int, global_batch_size: int,
                      offload: bool = False, contexts: tuple[int, ...] | None = None) -> list[Layout]:
    """Every layout of the module docstring's grid for `world_size` GPUs (rule-breaking ones included, but for the
    context degrees); contexts: the context-parallel degrees to consider (default all)."""
    out = []
    for tp in _divisors(min(gpus_per_node, world_size)):
        if world_size % tp:
            continue
        for pp in _divisors(world_size // tp):
            for cp in (c for c in context_degrees(cfg, world_size // (tp * pp), tp, pp)
                       if not contexts or c in contexts):
                dp = world_size // (tp * pp * cp)
                eps = [e for e in _divisors(dp) if cfg.moe.experts % e == 0] if cfg.moe is not None else [1]
                micros = _divisors(global_batch_size // dp) if global_batch_size % dp == 0 else [1]
                for zero in (1, 2, 3) if offload else (0, 1, 2, 3):
                    for sp in (False, True) if tp > 1 else (False,):
                        for micro in micros:
                            for k in CHECKPOINT_INTERVALS:
                                out += [Layout(tp, pp, dp, zero, micro, k, sp, offload, ep, cp) for ep in eps]
    return out


def evaluate(cfg: ModelConfig, layout: Layout, global_batch_size: int, gpu: str, gpu_memory_bytes: float,
             gpus_per_node: int = 8, mfu: float | None = None, framework_bytes: int = FRAMEWORK_BYTES,
             fragmentation: float = FRAGMENTATION) -> Candidate:
    """Memory, time and the reason it cannot run (if any) of one layout."""
    errors = layout_errors(cfg, layout, global_batch_size)
    if layout.pp > 1 and cfg.n_layers % layout.pp:
        errors.append(f"parallel.pipeline={layout.pp} does not divide model.n_layers={cfg.n_layers} (unequal stages)")
    if layout.tp > gpus_per_node:
        errors.append(f"parallel.tensor={layout.tp} spans nodes of {gpus_per_node} GPUs")
    if errors:
        return Candidate(layout, None, None, "; ".join(errors))
    mem = memory_per_gpu(cfg, layout, global_batch_size, framework_bytes=framework_bytes,
                         fragmentation=fragmentation)
    time = step_time(cfg, layout, global_batch_size, gpu, gpus_per_node, mfu)
    rejected = None
    if mem.total > gpu_memory_bytes:
        rejected = f"needs {mem.total / 1e9:.1f} GB > {gpu_memory_bytes / 1e9:.1f} GB"
    return Candidate(layout, mem, time, rejected)


def rank_layouts(cfg: ModelConfig, world_size: int, global_batch_size: int, gpu: str, gpu_memory_bytes: float,
                 gpus_per_node: int = 8, mfu: float | None = None,
                 contexts: tuple[int, ...] | None = None) -> list[Candidate]:
    """Every candidate, those that fit first (fastest first), then the rejected ones. Optimizer offload is tried
    only when nothing fits without it."""
    def run(offload: bool) -> list[Candidate]:
        return [evaluate(cfg, lay, global_batch_size, gpu, gpu_memory_bytes, gpus_per_node, mfu)
                for lay in enumerate_layouts(cfg, world_size, gpus_per_node, global_batch_size, offload, contexts)]

    cands = run(False)
    if not any(c.rejected is None for c in cands):
        cands += run(True)
    fits = sorted((c for c in cands if c.rejected is None), key=Candidate.sort_key)
    too_big = sorted((c for c in cands if c.rejected is not None and c.memory is not None),
                     key=lambda c: c.memory.total)
    broken = [c for c in cands if c.memory is None]
    return fits + too_big + broken


def choose_layout(cfg: ModelConfig, world_size: int, global_batch_size: int, gpu: str, gpu_memory_bytes: float,
                  gpus_per_node: int = 8, mfu: float | None = None,
                  contexts: tuple[int, ...] | None = None) -> Candidate:
    """The fastest layout that fits. Raises ValueError naming the smallest memory need when none fits."""
    ranked = rank_layouts(cfg, world_size, global_batch_size, gpu, gpu_memory_bytes, gpus_per_node, mfu, contexts)
    if ranked and ranked[0].rejected is None:
        return ranked[0]
    smallest = next((c for c in ranked if c.memory is not None), None)
    if smallest is None:
        raise ConfigError(f"no layout of {world_size} GPUs is valid for this model: {ranked[0].rejected}")
    raise ConfigError(f"no layout of {world_size} GPUs fits {gpu_memory_bytes / 1e9:.0f} GB: the smallest, "
                     f"{smallest.layout.describe()}, {smallest.rejected}; add GPUs or use larger ones")
