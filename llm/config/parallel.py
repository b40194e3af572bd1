"""The parallel layout and the numeric precision of a run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from typed_yaml import ConfigError


@dataclass
class ParallelConfig:
    """Layout on the world: tensor × pipeline × data (the data degree is what is left of the world)."""

    tensor: int = 1
    pipeline: int = 1
    zero_stage: int = 0
    offload_optimizer: bool = False
    """ZeRO-Offload of optimizer states to CPU memory (ZeRO stage >= 1)."""
    offload_params: bool = False
    """Parameter offload to CPU (ZeRO stage 3 only)."""
    sequence_parallel: bool = False
    activation_checkpointing: str = "none"
    """'none', 'full' (every layer) or 'every_k' (every checkpoint_every_k-th layer)."""
    checkpoint_every_k: int = 1
    pipeline_partition: str = "parameters"
    """DeepSpeed PipelineModule partition method: 'parameters', 'uniform' or 'type:...'."""
    deepspeed: dict[str, Any] = field(default_factory=dict)
    """Extra DeepSpeed config keys merged last into the generated JSON (for the rare knob we do not model)."""

    def validate(self, where: str = "parallel") -> None:
        if self.tensor < 1 or self.pipeline < 1:
            raise ConfigError(f"{where}.tensor and {where}.pipeline must be >= 1")
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
        if self.checkpoint_every_k < 1:
            raise ConfigError(f"{where}.checkpoint_every_k must be >= 1")

    @property
    def checkpoint_interval(self) -> int:
        """Activation checkpointing as one number: 0 none, 1 every block ('full'), k for 'every_k'. Blocks
        0, k, 2k, ... are recomputed in the backward pass (DeepSpeed's pipeline: segments of k blocks)."""
        return {"none": 0, "full": 1}.get(self.activation_checkpointing, self.checkpoint_every_k)


@dataclass
class PrecisionConfig:
    """Numeric format of the forward/backward pass; `precision: bf16` is shorthand for {dtype: bf16}."""

    SHORTHAND: ClassVar[str] = "dtype"
    dtype: str = "fp32"
    initial_loss_scale: float = 2.0 ** 16
    """fp16 only: dynamic loss scaling starts here, halves on overflow (the step is skipped)..."""
    loss_scale_window: int = 1000
    """...and doubles after this many overflow-free steps (Micikevicius et al. 2018)."""
    min_loss_scale: float = 1.0

    def validate(self, where: str = "precision") -> None:
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{where}.dtype={self.dtype!r} must be 'fp32', 'bf16' or 'fp16'")
        if self.initial_loss_scale <= 0 or self.loss_scale_window < 1 or self.min_loss_scale <= 0:
            raise ConfigError(f"{where}: loss-scale settings must be positive")
