"""The parallel layout and the numeric precision of a run."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from typed_yaml import ConfigError


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
    "fp16.min_loss_scale": ("precision.min_loss_scale", "the run's saved config.yaml records it there"),
    "pipeline.activation_checkpoint_interval": ("parallel.activation_checkpointing",
                                                "HFU counts the recomputed layers from it"),
    "checkpoint.load_universal": ("checkpoint.reshard", "a resume decides it from the saved layout"),
    "tensor_parallel": ("parallel.tensor", "DeepSpeed's AutoTP would shard the model a second time"),
    "sequence_parallel_size": ("parallel.sequence_parallel",
                               "DeepSpeed's Ulysses would shrink the data-parallel group the loop splits batches over"),
    "expert_parallel": ("parallel.expert", "the MoE blocks are handed to AutoEP by llm/moe.py's module names"),
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


@dataclass
class ParallelConfig:
    """Layout on the world: tensor × pipeline × data (the data degree is what is left of the world)."""

    tensor: int = 1
    """Tensor-parallel degree (Megatron-style): each layer's heads, d_ff and vocabulary are split over this many
    ranks, which all-reduce twice per layer, so keep them within a node. Must divide n_heads, n_kv_heads,
    vocab_size and d_ff."""
    pipeline: int = 1
    """Pipeline-parallel degree: the blocks are split into this many stages (pipeline_partition), fed micro-batch
    by micro-batch. At most n_layers; ZeRO stage 0 or 1 only."""
    expert: int = 1
    """Expert-parallel degree (needs model.moe): each MoE layer's routed experts are split over this many of the
    data-parallel ranks by DeepSpeed's AutoEP, which exchange the routed tokens all-to-all (dispatch and combine, in
    the forward and again in the backward pass). Must divide model.moe.experts and the data-parallel degree; the
    rest of the model stays replicated over the data-parallel ranks."""
    context: int = 1
    """Context-parallel degree (DeepSpeed Ulysses, Jacobs et al. 2023, arXiv:2309.14509): each sample's sequence is
    split into this many contiguous slices, one per rank; attention exchanges them all-to-all so that each rank
    attends over the whole sequence for 1/context of the heads, and everything else (embeddings, MLPs, the loss)
    works on the rank's slice only, cutting activation memory by this factor. Must divide model.seq_len and the
    key/value heads per tensor-parallel rank; taken from the ranks left after tensor × pipeline, so the
    data-parallel degree is world / (tensor × pipeline × context)."""
    zero_stage: int = 0
    """ZeRO stage over the data-parallel ranks (Rajbhandari et al. 2020): 0 replicates everything, 1 shards the
    optimizer states, 2 also the gradients, 3 also the parameters."""
    offload_optimizer: bool = False
    """ZeRO-Offload of optimizer states to CPU memory (ZeRO stage >= 1)."""
    offload_params: bool = False
    """Parameter offload to CPU (ZeRO stage 3 only)."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (Korthikanti et al. 2022): with tensor > 1, the norms and dropout work on a
    1/tensor slice of the sequence, cutting their activation memory by that factor for the same communication
    volume. Needs tensor to divide model.seq_len; no effect with tensor=1."""
    activation_checkpointing: str = "none"
    """'none', 'full' (every layer) or 'every_k' (every recompute_every_k-th layer)."""
    recompute_every_k: int = 1
    """With activation_checkpointing='every_k': blocks 0, k, 2k, ... keep only their inputs and recompute their
    activations in the backward pass (under pipeline parallelism DeepSpeed recomputes segments of k blocks).
    >= 1; ignored by the other modes. Trades memory for about one extra forward of those blocks, which HFU counts
    and MFU does not. Formerly checkpoint_every_k (llm.config.RENAMED_KEYS)."""
    tiled_mlp: int = 0
    """Run each dense block's SwiGLU over this many slices of the sequence (DeepSpeed's TiledMLP, from ALST: Bekman et
    al. 2025, arXiv:2506.13996): the forward keeps none of the MLP's activations and the backward recomputes them one
    slice at a time, so the MLP's 4·d_ff values per token (its largest activations at long sequences) live for one
    slice only, for one extra MLP forward. 0: off. Needs pipeline=1 and, with tensor > 1, no sequence_parallel; MoE
    blocks are not tiled."""
    pipeline_partition: str = "parameters"
    """DeepSpeed PipelineModule partition method: 'parameters', 'uniform' or 'type:...'."""
    deepspeed: dict[str, Any] = field(default_factory=dict)
    """Extra DeepSpeed config keys merged last into the generated JSON (for the rare knob we do not model)."""

    def validate(self, where: str = "parallel") -> None:
        if self.tensor < 1 or self.pipeline < 1 or self.expert < 1 or self.context < 1:
            raise ConfigError(f"{where}.tensor, {where}.pipeline, {where}.expert and {where}.context must be >= 1")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"{where}.zero_stage={self.zero_stage} must be 0, 1, 2 or 3")
        if self.zero_stage >= 2 and self.pipeline > 1:
            raise ConfigError(f"{where}.zero_stage={self.zero_stage} cannot be combined with {where}.pipeline="
                              f"{self.pipeline}: DeepSpeed's pipeline engine supports ZeRO stage 0 or 1 only; "
                              "use zero_stage=1 with pipeline parallelism, or pipeline=1 with ZeRO-2/3")
        if self.pipeline_partition not in ("parameters", "uniform") and not self.pipeline_partition.startswith("type:"):
            raise ConfigError(f"{where}.pipeline_partition={self.pipeline_partition!r} must be 'parameters', "
                              "'uniform' or 'type:<regex>'")
        if self.offload_params and self.zero_stage != 3:
            raise ConfigError(f"{where}.offload_params needs {where}.zero_stage=3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError(f"{where}.offload_optimizer needs {where}.zero_stage >= 1")
        if self.activation_checkpointing not in ("none", "full", "every_k"):
            raise ConfigError(f"{where}.activation_checkpointing={self.activation_checkpointing!r} must be "
                              "'none', 'full' or 'every_k'")
        if self.tiled_mlp < 0:
            raise ConfigError(f"{where}.tiled_mlp={self.tiled_mlp} must be >= 0 (0: off)")
        if self.tiled_mlp and self.pipeline > 1:
            raise ConfigError(f"{where}.tiled_mlp needs {where}.pipeline=1 (the pipeline builds its own blocks)")
        if self.tiled_mlp and self.tensor > 1 and self.sequence_parallel:
            raise ConfigError(f"{where}.tiled_mlp cannot be combined with {where}.sequence_parallel: its slices of the "
                              "sequence would each be gathered and scattered over the tensor-parallel ranks")
        if self.recompute_every_k < 1:
            raise ConfigError(f"{where}.recompute_every_k={self.recompute_every_k} must be >= 1")
        # In every mode: debug mode ignores the block, and a typo accepted there would fail only once launched.
        errors = override_errors(self.deepspeed, f"{where}.deepspeed")
        if errors:
            raise ConfigError("; ".join(errors))

    @property
    def recompute_interval(self) -> int:
        """Activation checkpointing as one number: 0 none, 1 every block ('full'), k for 'every_k'. Blocks
        0, k, 2k, ... are recomputed in the backward pass (DeepSpeed's pipeline: segments of k blocks)."""
        return {"none": 0, "full": 1}.get(self.activation_checkpointing, self.recompute_every_k)


@dataclass
class PrecisionConfig:
    """Numeric format of the forward/backward pass; `precision: bf16` is shorthand for {dtype: bf16}."""

    SHORTHAND: ClassVar[str] = "dtype"
    dtype: str = "fp32"
    """'fp32', 'bf16' or 'fp16' for the forward and backward pass; master weights and optimizer states stay fp32.
    fp32 by default because it is right on every device, CPUs without bf16 instructions included; use bf16 on
    GPUs that have it."""
    initial_loss_scale: float = 2.0 ** 16
    """fp16 only: dynamic loss scaling starts here, halves on overflow (the step is skipped)... DeepSpeed takes
    it as a power of two (2^floor(log2)), so give one to get the same start in both modes."""
    loss_scale_window: int = 1000
    """...and doubles after this many overflow-free steps (Micikevicius et al. 2018)."""
    min_loss_scale: float = 1.0
    """fp16 under DeepSpeed only: the scale never halves below this, and an overflow at this floor ends the run
    (DeepSpeed 0.19's "loss scale already at minimum" exception). Debug mode's torch GradScaler has no floor and
    ignores it."""

    def validate(self, where: str = "precision") -> None:
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{where}.dtype={self.dtype!r} must be 'fp32', 'bf16' or 'fp16'")
        if self.initial_loss_scale <= 0 or self.loss_scale_window < 1 or self.min_loss_scale <= 0:
            raise ConfigError(f"{where}: loss-scale settings must be positive")


def expert_layout_errors(moe, ep: int, dp: int, tp: int, pp: int, zero_stage: int) -> list[str]:
    """Every way an MoE model (`moe`: model.moe, None for a dense model) and parallel.expert=ep do not fit a
    tp × pp × dp layout (empty when they do); the launcher (parallel/topology.py) and the planner (llm/cost) both
    ask here. The refused combinations name DeepSpeed's reason: AutoEP (0.19) does not compose with a model's own
    tensor parallelism, the load-balancing loss of every MoE layer must reach the loss, which a pipeline's last
    stage cannot see, and ZeRO-0 clips expert-parallel gradients with a wrong norm."""
    errors = []
    if moe is None:
        if ep > 1:
            errors.append(f"parallel.expert={ep} needs a mixture-of-experts model: set model.moe (e.g. "
                          "model.moe.experts=8)")
        return errors
    if ep > 1 and zero_stage == 0:
        errors.append(f"parallel.expert={ep} needs parallel.zero_stage >= 1: DeepSpeed's ZeRO-0 clips with the mean "
                      "of the ranks' gradient norms, which differ when ranks hold different experts (measured 1e-3 "
                      "relative off the true norm); ZeRO-1 clips with the global norm")
    if moe.experts % ep:
        errors.append(f"parallel.expert={ep} does not divide model.moe.experts={moe.experts}")
    if dp and dp % ep:
        errors.append(f"parallel.expert={ep} does not divide the data-parallel degree {dp} (the experts are split "
                      "over data-parallel ranks)")
    if tp > 1:
        errors.append(f"model.moe cannot be combined with parallel.tensor={tp}: DeepSpeed's AutoEP (0.19) refuses a "
                      "model's own tensor parallelism; use parallel.expert with data parallelism")
    if pp > 1:
        errors.append(f"model.moe cannot be combined with parallel.pipeline={pp}: every MoE layer's load-balancing "
                      "loss joins the loss, which only the last pipeline stage computes")
    return errors


def context_layout_errors(model, context: int, tp: int, pp: int) -> list[str]:
    """Every way parallel.context=context (DeepSpeed Ulysses) does not fit `model` (a ModelConfig: its seq_len,
    heads and moe) under tensor degree tp and pipeline degree pp (empty when it does); the launcher
    (parallel/topology.py) and the planner (llm/cost) both ask here. Ulysses cuts each sequence into `context`
    equal slices and, around attention, trades them all-to-all for whole heads, so it must divide the sequence and
    the query and key/value heads of each tensor-parallel rank."""
    if context < 1:
        return [f"parallel.context={context} must be >= 1"]
    if context == 1:
        return []
    errors = []
    if model.seq_len % context:
        errors.append(f"parallel.context={context} does not divide model.seq_len={model.seq_len} (each rank takes "
                      "an equal slice of every sequence)")
    for key in ("n_kv_heads", "n_heads"):  # the key/value heads divide the query heads: one error says it
        heads = getattr(model, key)
        if heads % tp == 0 and (heads // tp) % context:
            errors.append(f"parallel.context={context} does not divide the {heads // tp} heads per tensor-parallel "
                          f"rank (model.{key}={heads} / parallel.tensor={tp}): Ulysses gives each rank whole heads")
            break
    if pp > 1:
        errors.append(f"parallel.context={context} cannot be combined with parallel.pipeline={pp}: DeepSpeed's "
                      "pipeline engine does not pass the sequence-parallel group to its stages; use pipeline=1")
    if model.moe is not None:
        errors.append(f"parallel.context={context} cannot be combined with model.moe: the experts' all-to-all over "
                      "data-parallel ranks that hold slices of one sample is not supported; train long contexts with a "
                      "dense model")
    return errors
