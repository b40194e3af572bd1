"""Measure the model-state bytes a live DeepSpeed engine holds, to check llm/cost/zero.py's formulas (the ZeRO
paper's table and DeepSpeed 0.19.8's adjustments, with the reasons they differ, are documented there).

The CPU accelerator's `memory_allocated()` is the process RSS (cpu_accelerator.py), which mixes in
activations, the allocator and libraries, so the bytes are counted from the tensors the engine and
optimizer reference, deduplicated by storage.
"""
from __future__ import annotations

from llm.cost.zero import ZeroBytes

# Attributes of DeepSpeed 0.19.8's optimizer wrappers that hold gradients (views are deduplicated by storage).
# stage_1_and_2.DeepSpeedZeroOptimizer: partitioned (stage 2, and stage 1 after the boundary reduction).
# stage3.DeepSpeedZeroOptimizer_Stage3: one flat buffer of this rank's gradient partitions.
# bf16_optimizer.BF16_Optimizer: full-size fp32 accumulation buffers.
_GRAD_ATTRS = ("averaged_gradients", "all_grad_tensors", "grads_in_partition", "grad_partitions_flat_buffer",
               "fp32_groups_gradients_flat")
# ...and the fp32 master weights. Listed by name because ZeRO-3 hands the inner optimizer its partitions only
# inside step() (stage3.py `_optimizer_step` empties `param_groups[i]['params']` again afterwards).
# fp16.unfused_optimizer.FP16_UnfusedOptimizer (stage 0 in bf16), stage 1/2, stage 3, BF16_Optimizer:
_MASTER_ATTRS = ("fp32_groups", "single_partition_of_fp32_groups", "fp32_partitioned_groups_flat",
                 "fp32_groups_flat_partition")


def _storage_bytes(tensors, seen: set) -> int:
    """Bytes of the distinct storages behind `tensors` not yet in `seen` (storage addresses, updated)."""
    total = 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes and ptr not in seen:
            seen.add(ptr)
            total += nbytes
    return total


def _tensors(obj, depth: int = 0):
    """Tensors reachable from obj through lists, tuples and dict values."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item, depth + 1)


def measure_zero_bytes(engine) -> ZeroBytes:
    """Bytes of parameters, gradients and optimizer state this rank's DeepSpeed engine holds right now.

    engine: a `deepspeed.DeepSpeedEngine` (not a pipeline engine) whose optimizer has stepped at least
    once (torch creates Adam's moments lazily, in the first step). Gradients exist between a backward pass
    and the optimizer step, so measure there; after `engine.step()` they are freed.
    Counts each storage once, in the first category that reaches it (params, grads, optimizer, buffers),
    and counts a whole storage when a tensor is a view into it (the padded flat buffers of ZeRO).
    Reads the engine's objects only: no collectives, no side effects.
    """
    seen: set = set()
    module_params = list(engine.module.parameters())
    # ZeRO-3 replaces each parameter's data by an empty tensor and keeps this rank's slice in `ds_tensor`;
    # a parameter still gathered (persistent, or mid-forward) also holds its full data.
    params = _storage_bytes([getattr(p, "ds_tensor", None) for p in module_params] + [p.data for p in module_params],
                            seen)

    wrapper = engine.optimizer
    inner = getattr(wrapper, "optimizer", wrapper)  # the torch optimizer the wrapper feeds fp32 partitions to
    master = [p for group in inner.param_groups for p in group["params"]]
    for name in _MASTER_ATTRS:
        master += list(_tensors(getattr(wrapper, name, None)))
    grad_tensors = [p.grad for p in module_params] + [p.grad for p in master]
    for name in _GRAD_ATTRS:
        grad_tensors += list(_tensors(getattr(wrapper, name, None)))
    grads = _storage_bytes(grad_tensors, seen)

    optimizer = _storage_bytes(master + list(_tensors(list(inner.state.values()))), seen)

    buckets = [b.buffer for b in getattr(wrapper, "ipg_buckets", {}).values() if hasattr(b, "buffer")]
    buffers = _storage_bytes(list(_tensors(buckets)), seen)
    return ZeroBytes(params, grads, optimizer, buffers)


def format_table(rows: list[dict]) -> str:
    """Measured vs paper, one line per (dp, stage, point): rows carry 'dp', 'zero_stage', 'point', 'n_params',
    'measured' and 'paper' (ZeroBytes.as_dict() each). Bytes are shown as multiples of Ψ."""
    head = (f"{'dp':>2} {'zero':>4} {'point':>10} | {'params':>13} {'grads':>13} {'optimizer':>13} "
            f"{'total':>13} | {'buckets MB':>10}   (measured/paper, in units of Ψ bytes)")
    lines = [head, "-" * len(head)]
    for r in rows:
        psi, m, p = r["n_params"], r["measured"], r["paper"]
        cells = [f"{m[k] / psi:6.3f}/{p[k] / psi:6.3f}" for k in ("params", "grads", "optimizer", "total")]
        lines.append(f"{r['dp']:>2} {r['zero_stage']:>4} {r['point']:>10} | " + " ".join(f"{c:>13}" for c in cells)
                     + f" | {m['buffers'] / 1e6:10.1f}")
    return "\n".join(lines)
