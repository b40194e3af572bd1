"""The DeepSpeed JSON, generated from our typed config (never hand-written), and saved in the run directory.

`parallel.deepspeed` passes the rare knob we do not model straight through (merged last), but only keys
DeepSpeed knows and none of those the training loop depends on (`override_errors`): launchers check it, with
the layout, before any process group exists (parallel/topology.py `check_layout`).
"""
from __future__ import annotations

import copy
import math

from llm.config import ConfigError, OptimConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig


# The keys and the check live with the config field they police (llm/config/parallel.py), so that every mode, debug
# mode included, refuses the same mistakes; re-exported here, where the JSON is generated.
from llm.config.parallel import DEEPSPEED_KEYS, GENERATED, override_errors  # noqa: F401


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def batch_error(train: TrainConfig, dp: int) -> str | None:
    """Why train.global_batch_size cannot be split into micro-batches over `dp` data-parallel ranks, or None."""
    per_pass = train.micro_batch_size * dp
    if train.global_batch_size % per_pass != 0:
        return (f"train.global_batch_size={train.global_batch_size} is not a multiple of "
                f"train.micro_batch_size={train.micro_batch_size} × data-parallel degree {dp}")
    return None


def gradient_accumulation_steps(cfg: RunConfig, dp: int) -> int:
    error = batch_error(cfg.train, dp)
    if error:
        raise ConfigError(error)
    return cfg.train.global_batch_size // (cfg.train.micro_batch_size * dp)


def deepspeed_config(cfg: RunConfig, dp: int, cp: int = 1) -> dict:
    """DeepSpeed config for a pretraining layout whose data-parallel degree is `dp` and context degree `cp`.

    DeepSpeed counts the context ranks as data-parallel ones (parallel/topology.py), each seeing a whole batch of
    slices, so its train_batch_size (micro × accumulation × its data-parallel world) is the global batch × cp: a
    bookkeeping number, as the loop hands every rank its micro-batches."""
    ds = engine_config(cfg.optim, cfg.parallel, cfg.precision, cfg.train.global_batch_size * cp,
                       cfg.train.micro_batch_size, gradient_accumulation_steps(cfg, dp))
    from parallel.experts import expert_parallel_config
    section = expert_parallel_config(cfg)
    if section is not None:
        ds["expert_parallel"] = section
    return ds


def engine_config(o: OptimConfig, p: ParallelConfig, prec: PrecisionConfig, global_batch: int, micro_batch: int,
                  accumulation: int) -> dict:
    """DeepSpeed config of one trained model from its optimizer, layout and precision settings.

    The optimizer is DeepSpeed's `AdamW` built from optim.*; with `torch_adam` it is torch's own AdamW, the
    same update as debug mode, so the layouts can be compared with debug mode step for step. The LR is set
    by our loop before each step (no DeepSpeed scheduler), so resume and every layout share one schedule.
    `p.deepspeed` is merged last; raises ConfigError when override_errors finds anything in it.
    """
    errors = override_errors(p.deepspeed)
    if errors:
        raise ConfigError("; ".join(errors))
    ds: dict = {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": o.grad_clip,
        "optimizer": {"type": "AdamW", "params": {
            "lr": o.lr, "betas": [o.beta1, o.beta2], "eps": o.eps, "weight_decay": o.weight_decay,
            # DeepSpeed's CPU Adam (a JIT-built C++ op) is required for optimizer offload; otherwise torch's AdamW.
            "torch_adam": not p.offload_optimizer, **({"fused": o.fused} if not p.offload_optimizer else {})}},
        "zero_optimization": {"stage": p.zero_stage},
        "bf16": {"enabled": prec.dtype == "bf16"},
        "fp16": {"enabled": prec.dtype == "fp16", "loss_scale": 0,
                 "initial_scale_power": int(math.log2(prec.initial_loss_scale)),
                 "loss_scale_window": prec.loss_scale_window, "hysteresis": 2,
                 "min_loss_scale": prec.min_loss_scale},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }
    z = ds["zero_optimization"]
    if p.offload_optimizer:
        z["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if p.offload_params:
        z["offload_param"] = {"device": "cpu", "pin_memory": False}
    if p.pipeline > 1 and p.tensor > 1 and p.sequence_parallel:
        # DeepSpeed's pipeline splits the activations it sends over the TP group; under sequence parallelism
        # they are already split by sequence, and partitioning them again gives wrong losses (~1e-3).
        ds["pipeline"] = {"pipe_partitioned": False, "grad_partitioned": False}
    if p.zero_stage == 3:
        # Gather parameters eagerly for small models; these only change memory/speed trade-offs, not results.
        z.update(stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=5e7)
    return _merge(ds, p.deepspeed)
