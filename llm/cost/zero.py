"""Per-rank bytes of model states under ZeRO: the ZeRO paper's table, and what DeepSpeed 0.19.8 keeps.

Rajbhandari et al. 2019, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models"
(arXiv:1910.02054), §3.1 and Figure 1: mixed-precision Adam keeps, per parameter, 2 bytes of fp16 weights,
2 bytes of fp16 gradients and K = 12 bytes of optimizer state (fp32 master weights, momentum and variance,
4 + 4 + 4). With Ψ parameters and data-parallel degree N_d, bytes per rank are

    baseline (stage 0)   (2 + 2 + K)Ψ
    stage 1 (P_os)       2Ψ + 2Ψ + KΨ/N_d
    stage 2 (P_os+g)     2Ψ + (2 + K)Ψ/N_d
    stage 3 (P_os+g+p)   (2 + 2 + K)Ψ/N_d

`paper_zero_bytes` is that table. `deepspeed_zero_bytes` is the same table adjusted for what DeepSpeed
0.19.8 actually keeps under our generated config (bf16 standing in for fp16: same 2 bytes), and
`parallel.memory.measure_zero_bytes` counts the bytes a live engine holds. Where the two DeepSpeed columns differ from
the paper, and why:

- ZeRO-1 at the accumulation boundary. Between the micro-batches of a step, ZeRO-1 accumulates full-size
  gradients in `param.grad` (2Ψ, as the paper says). After the last micro-batch's backward, though,
  `DeepSpeedZeroOptimizer` (stage_1_and_2.py, shared by stages 1 and 2) reduce-scatters them into this
  rank's partition (`averaged_gradients`) and frees `param.grad`, exactly as stage 2 does, so at the moment
  the optimizer steps ZeRO-1 holds 2Ψ/N_d of gradients. Stage 1 vs 2 differ only while accumulating.
- ZeRO-1/2 gradient partitions hold whole parameters. The partitioned gradient buffer
  (`get_partition_info`, `params_in_partition`) has room for every parameter that overlaps this rank's slice
  of the flat buffer, whole, so a rank whose slice edge cuts a large matrix holds that matrix's gradient
  beyond its 2Ψ/N_d share (`zero12_partition_numels` computes it). The fp32 master and Adam partitions are
  cut exactly at the slice edges.
- Reduction buckets. With `contiguous_gradients` (DeepSpeed's default, and ours), stages 1 and 2 allocate
  a bucket of exactly `reduce_bucket_size` elements (default 5e8: 1 GB in bf16) per gradient communication
  dtype at the start of every backward pass (stage_1_and_2.py `setup_buckets`: `torch.empty(reduce_bucket_size)`,
  a second one when `overlap_comm` is on; under a pipeline `reduce_gradients` allocates it instead), whatever
  the model size: the size is never capped at the parameters it will hold. ZeRO-2 frees it when the pass ends,
  ZeRO-1 keeps it until the boundary. ZeRO-3 allocates its bucket once at start-up (stage3.py, same size) and
  keeps it. Without `contiguous_gradients` no bucket is allocated (gradients are reduced in place). A single
  gradient larger than the bucket bypasses it. Reported as `buffers`, outside the paper's model states. On
  the CPU accelerator it is a lazily committed `torch.empty`: only the pages gradients write (≤ 2Ψ bytes)
  become resident, so the process RSS does not grow by 1 GB; on a GPU the caching allocator reserves it all
  (llm/cost/memory.py counts both: `buckets` and `buckets_filled`).
- Padding. Flat buffers are padded so every rank's partition has the same length (stages 1–2: per
  parameter group, to a multiple of N_d × 2 elements for 4-byte alignment; stage 3: per parameter, to a
  multiple of N_d). Counted as held; at most a few elements per rank per group or parameter.
- Adam step counters: torch's AdamW keeps `step` as a 4-byte tensor per parameter tensor it updates.
- Stage 0 with bf16 is `FP16_UnfusedOptimizer`: per-parameter fp32 master copies (4Ψ) plus Adam moments
  (8Ψ), bf16 weights and gradients in the module: the paper's 16Ψ. It makes fp32 copies of the gradients
  (4Ψ) only inside `step()`, so they never show between steps. DeepSpeed's `BF16_Optimizer` keeps a
  permanent full-size gradient accumulation buffer of `grad_accum_dtype` (`fp32_groups_gradients_flat`:
  4Ψ in fp32 instead of the paper's 2Ψ); engine.py `_do_optimizer_sanity_check` picks it for ZeRO-1 with
  `data_types.grad_accum_dtype: fp32` (not set by our generated config, so not measured here) and for
  bf16 pipeline engines without ZeRO (there with bf16 accumulation: 2Ψ).
- The CPU accelerator's `memory_allocated()` is the process RSS (cpu_accelerator.py), which mixes in
  activations, the allocator and libraries, so the bytes are counted from the tensors the engine and
  optimizer reference, deduplicated by storage.
Pure arithmetic, no torch (the planner, llm/cost/memory.py, builds on it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typed_yaml import ConfigError

ZERO_PAPER_K = 12
"""Optimizer-state bytes per parameter of mixed-precision Adam (Rajbhandari et al. 2019, §3.1)."""


@dataclass(frozen=True)
class ZeroBytes:
    """Bytes of model states on one rank."""

    params: int
    """Low-precision weights the module computes with (ZeRO-3: this rank's partition)."""
    grads: int
    """Gradients as held: full `.grad`, or partitioned gradient buffers."""
    optimizer: int
    """fp32 master weights the inner optimizer updates, and its state (Adam's two moments and step)."""
    buffers: int = 0
    """Communication buckets outside the paper's model states (not in `total`)."""

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def paper_zero_bytes(n_params: int, dp: int, zero_stage: int, k: int = ZERO_PAPER_K) -> ZeroBytes:
    """The ZeRO paper's bytes per rank (§3.1, Figure 1) for Ψ = n_params parameters at N_d = dp.

    Raises ValueError for a stage outside 0–3 or a non-positive degree.
    """
    if zero_stage not in (0, 1, 2, 3) or dp < 1 or n_params < 0:
        raise ConfigError(f"zero_stage={zero_stage} must be 0-3, dp={dp} >= 1, n_params={n_params} >= 0")
    psi = n_params
    return ZeroBytes(params=round(2 * psi / dp) if zero_stage >= 3 else 2 * psi,
                     grads=round(2 * psi / dp) if zero_stage >= 2 else 2 * psi,
                     optimizer=round(k * psi / dp) if zero_stage >= 1 else k * psi)


def zero12_partition_numels(group_numels: list[list[int]], dp: int, dp_rank: int,
                            alignment_factor: int = 2) -> list[tuple[int, int, int]]:
    """How ZeRO stages 1-2 (DeepSpeed 0.19.8 stage_1_and_2.py) cut each parameter group for `dp_rank`.

    group_numels: element counts of the parameters of each optimizer parameter group, in group order.
    Each group is flattened and padded to a multiple of alignment_factor × dp elements (4-byte alignment
    of bf16/fp16 all-gather buffers), then cut into dp equal partitions. Returns one tuple per group:
    (padded flat numel, partition numel, numel of the parameters that overlap this rank's partition, whole).
    The last is what the partitioned gradient buffer holds (`get_partition_info`, `params_in_partition`).
    """
    out = []
    for numels in group_numels:
        align = alignment_factor * dp
        padded = -(-sum(numels) // align) * align
        size = padded // dp
        start, end = size * dp_rank, size * (dp_rank + 1)
        offset, overlapping = 0, 0
        for n in numels:
            if start <= offset < end or offset < start < offset + n:
                overlapping += n
            offset += n
        out.append((padded, size, overlapping))
    return out


def deepspeed_zero_bytes(group_numels: list[list[int]], dp: int, zero_stage: int, at_boundary: bool,
                         dp_rank: int = 0) -> ZeroBytes:
    """The paper's table as DeepSpeed 0.19.8 keeps it with bf16 and torch AdamW (see the module docstring).

    group_numels: element counts of each optimizer parameter group's parameters, in order (Ψ is their sum).
    at_boundary: after the backward pass of a step's last micro-batch (gradients reduced, optimizer not yet
    stepped) rather than between the micro-batches of an accumulation.
    dp_rank: matters for ZeRO-1/2 only, whose partitioned gradients cover whole parameters (see
    `zero12_partition_numels`).
    Exact byte counts, buckets excluded: padding, and torch AdamW's 4-byte `step` tensor per tensor it
    updates (per parameter at stage 0, per group's flat fp32 partition at stages 1-3).
    """
    psi = sum(sum(g) for g in group_numels)
    n_tensors = sum(len(g) for g in group_numels)
    k_master, k_moments, step_bytes = 4, 8, 4  # fp32 master, Adam's exp_avg + exp_avg_sq, Adam's step
    if zero_stage == 0:
        return ZeroBytes(2 * psi, 2 * psi, (k_master + k_moments) * psi + step_bytes * n_tensors)
    if zero_stage in (1, 2):
        cuts = zero12_partition_numels(group_numels, dp, dp_rank)
        partitioned_grads = zero_stage == 2 or at_boundary
        return ZeroBytes(params=2 * sum(padded for padded, _, _ in cuts),
                         grads=2 * sum(whole for _, _, whole in cuts) if partitioned_grads else 2 * psi,
                         optimizer=sum((k_master + k_moments) * size + step_bytes for _, size, _ in cuts))
    if zero_stage == 3:
        # stage3.py pads every parameter to a multiple of dp and keeps its 1/dp slice (`ds_tensor`).
        part = sum(-(-n // dp) for g in group_numels for n in g)
        return ZeroBytes(2 * part, 2 * part, (k_master + k_moments) * part + step_bytes * len(group_numels))
    raise ConfigError(f"zero_stage={zero_stage} must be 0-3")
