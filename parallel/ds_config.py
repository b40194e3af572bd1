"""The DeepSpeed JSON, generated from our typed config (never hand-written), and saved in the run directory.

`parallel.deepspeed` passes the rare knob we do not model straight through (merged last), but only keys
DeepSpeed knows and none of those the training loop depends on (`override_errors`): launchers check it, with
the layout, before any process group exists (parallel/topology.py `check_layout`).
"""
from __future__ import annotations

import copy
import difflib
import math

from llm.config import ConfigError, OptimConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig


DEEPSPEED_KEYS = frozenset({
    "activation_checkpointing", "aio", "autotuning", "bf16", "bfloat16", "checkpoint", "comet", "comms_logger",
    "communication_data_type", "compile", "csv_monitor", "data_efficiency", "data_parallel_size", "data_types",
    "dataloader_drop_last", "datastates_ckpt", "disable_allgather", "disable_python_gc", "dump_state",
    "expert_parallel", "flops_profiler", "fp16", "gradient_accumulation_steps", "gradient_allreduce_op",
    "gradient_clipping", "gradient_predivide_factor", "hybrid_engine", "log_level", "managed_gradient_accumulation",
    "memory_breakdown", "optimizer", "pipeline", "prescale_gradients", "scheduler",
    "seq_parallel_communication_data_type", "sequence_parallel_size", "steps_per_print", "tensor_parallel",
    "tensorboard", "timers", "torch_autocast", "train_batch_size", "train_micro_batch_size_per_gpu",
    "use_data_before_expert_parallelism", "vocabulary_size", "wall_clock_breakdown", "wandb", "weight_quantization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "zero_optimization",
})
"""Top-level keys DeepSpeed 0.19.8 reads: those `DeepSpeedConfig` (runtime/config.py) looks up, less the ones it
rejects as removed features (`_REMOVED_TOP_LEVEL_CONFIG_KEYS`: amp, elasticity, curriculum_learning, ...), plus
`sequence_parallel_size` and `data_parallel_size`, which `deepspeed.initialize` reads itself.
tests/parallel/test_ds_config.py derives the same set from the installed DeepSpeed."""

GENERATED = {
    "train_batch_size": ("train.global_batch_size", "the loop builds every step's global batch"),
    "train_micro_batch_size_per_gpu": ("train.micro_batch_size", "the loop cuts each rank's share into them"),
    "gradient_accumulation_steps": ("train.global_batch_size / (train.micro_batch_size × data-parallel degree)",
                                    "the loop hands the engine exactly that many micro-batches per step"),
    "gradient_clipping": ("optim.grad_clip", "debug mode clips with the same value"),
    "optimizer": ("optim.*", "every layout and debug mode run the same AdamW"),
    "scheduler": ("optim.lr, optim.warmup_steps and optim.min_lr_ratio", "the loop sets the LR of every step"),
    "zero_optimization.stage": ("parallel.zero_stage", "checkpoints record it as part of the layout"),
    "zero_optimization.offload_optimizer": ("parallel.offload_optimizer", "it also chooses the optimizer kernel"),
    "zero_optimization.offload_param": ("parallel.offload_params", "it is validated against the ZeRO stage"),
    "bf16.enabled": ("precision.dtype", "debug mode and the loss-scale logging follow precision"),
    "fp16.enabled": ("precision.dtype", "debug mode and the loss-scale logging follow precision"),
    "bfloat16": ("precision.dtype", "it is DeepSpeed's older name for bf16"),
    "torch_autocast": ("precision.dtype", "the engine's precision follows precision"),
    "fp16.loss_scale": ("precision.initial_loss_scale", "loss scaling is dynamic, as in debug mode"),
    "fp16.initial_scale_power": ("precision.initial_loss_scale", "debug mode starts from the same scale"),
    "fp16.loss_scale_window": ("precision.loss_scale_window", "debug mode grows the scale on the same window"),
    "fp16.min_loss_scale": ("precision.min_loss_scale", "debug mode stops at the same floor"),
    "pipeline.activation_checkpoint_interval": ("parallel.activation_checkpointing",
                                                "HFU counts the recomputed layers from it"),
    "checkpoint.load_universal": ("checkpoint.reshard", "a resume decides it from the saved layout"),
    "tensor_parallel": ("parallel.tensor", "DeepSpeed's AutoTP would shard the model a second time"),
    "sequence_parallel_size": ("parallel.sequence_parallel",
                               "DeepSpeed's Ulysses would shrink the data-parallel group the loop splits batches over"),
    "data_parallel_size": ("the world size / (parallel.tensor × parallel.pipeline)",
                           "the loop splits every batch over that data-parallel degree"),
    "data_efficiency": ("the training loop", "it chooses every step's samples; DeepSpeed's sampling, curriculum and "
                                             "random-LTD would change them"),
}
"""parallel.deepspeed keys refused, by dotted path: (the typed setting they are generated from, why it matters)."""


def override_errors(overrides: dict, where: str = "parallel.deepspeed") -> list[str]:
    """Every key of `overrides` (merged last into the generated DeepSpeed JSON) that is not DeepSpeed's, or that
    overrides a key we generate and the loop depends on (GENERATED); empty when the overrides are safe."""
    errors = []
    for key in overrides:
        if key not in DEEPSPEED_KEYS:
            close = difflib.get_close_matches(key, DEEPSPEED_KEYS, n=1)
            errors.append(f"{where}.{key} is not a DeepSpeed 0.19.8 config key"
                          + (f" (did you mean {close[0]}?)" if close else ""))
    for path, (source, reason) in GENERATED.items():
        head, _, sub = path.partition(".")
        if head not in overrides:
            continue
        # A non-dict value replaces the whole generated section, sub-key included.
        if not sub or not isinstance(overrides[head], dict) or sub in overrides[head]:
            errors.append(f"{where}.{path} is generated from {source} ({reason}): set that instead")
    return errors


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


def deepspeed_config(cfg: RunConfig, dp: int) -> dict:
    """DeepSpeed config for a pretraining layout whose data-parallel degree is `dp`."""
    return engine_config(cfg.optim, cfg.parallel, cfg.precision, cfg.train.global_batch_size,
                         cfg.train.micro_batch_size, gradient_accumulation_steps(cfg, dp))


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
