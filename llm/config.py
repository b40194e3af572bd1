"""Typed run configuration: one dataclass per concern, YAML as serialisation.

No torch here (the spec layer and the launchers import it cheaply). `load_config` turns a YAML file plus
dotted command-line overrides into a validated `RunConfig` (through the `typed_yaml` package); every error is a
`ConfigError` whose message names the file, the key and the rule, so entry points can print it without a
stack trace.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

import typed_yaml
from typed_yaml import ConfigError  # noqa: F401  (re-exported: the error every entry point catches)


def _round_up(x: int, multiple: int) -> int:
    return ((x + multiple - 1) // multiple) * multiple


@dataclass
class ModelConfig:
    """Shape of a Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention)."""

    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; defaults to n_heads (plain multi-head attention)."""
    head_dim: int | None = None
    """Width of one attention head. Defaults to d_model / n_heads when n_heads divides d_model; set it to
    decouple the two (q/k/v project d_model → n_heads·head_dim and o projects back, as in Llama)."""
    d_ff: int | None = None
    """SwiGLU hidden size; defaults to 8/3·d_model rounded up to a multiple of 64 (Llama's rule keeps
    the SwiGLU MLP at the parameter count of a 4·d_model GELU MLP)."""
    vocab_size: int = 4096
    seq_len: int = 256
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    """Std of the normal init; output projections are further scaled by 1/sqrt(2·n_layers) (GPT-2)."""
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        # Left None when n_heads does not divide d_model: validate() then asks for an explicit head_dim
        # rather than silently training heads of width d_model // n_heads.
        if self.head_dim is None and self.n_heads > 0 and self.d_model % self.n_heads == 0:
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = _round_up(int(8 * self.d_model / 3), 64)

    def validate(self, where: str = "model") -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be positive")
        if self.head_dim is None:
            raise ConfigError(
                f"{where}.n_heads={self.n_heads} does not divide {where}.d_model={self.d_model}: set "
                f"{where}.head_dim (e.g. {where}.head_dim={_round_up(-(-self.d_model // self.n_heads), 2)}; "
                f"attention projects d_model to n_heads·head_dim and back) or pick n_heads dividing d_model")
        for name in ("n_kv_heads", "head_dim", "d_ff", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be positive")
        for name in ("rope_theta", "norm_eps", "init_std"):
            if not getattr(self, name) > 0:  # `not >` also refuses nan
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be positive")
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(f"{where}.n_kv_heads={self.n_kv_heads} must divide {where}.n_heads={self.n_heads} "
                              "(each key/value head serves a whole group of query heads)")
        if self.head_dim % 2 != 0:
            raise ConfigError(f"{where}.head_dim={self.head_dim} must be even for rotary embeddings")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout={self.dropout} must be in [0, 1)")


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)
    """Prefixes of Megatron .bin/.idx datasets (without the extension)."""
    weights: list[float] | None = None
    """Blend weights, one per path; defaults to proportional to nothing: equal weights."""
    tokenizer: str | None = None
    """sentencepiece .model; its vocab must fit model.vocab_size."""
    valid_fraction: float = 0.05
    """Tail fraction of each dataset's token stream held out for evaluation."""

    def validate(self, where: str = "data") -> None:
        if not self.paths:
            raise ConfigError(f"{where}.paths is empty: name at least one prepared dataset prefix "
                              "(the output of launch/prepare_data.py, e.g. runs/data/python_docs/data)")
        if self.weights is not None and len(self.weights) != len(self.paths):
            raise ConfigError(f"{where}.weights has {len(self.weights)} entries but {where}.paths has {len(self.paths)}")
        if self.weights is not None and (any(w < 0 for w in self.weights) or sum(self.weights) <= 0):
            raise ConfigError(f"{where}.weights must be non-negative with a positive sum")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"{where}.valid_fraction={self.valid_fraction} must be in (0, 1)")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to min_lr_ratio·lr (Chinchilla decays to 10%)."""

    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    fused: bool = True
    """torch's fused AdamW kernel (CPU and CUDA), in debug mode and DeepSpeed's torch AdamW alike: on 2 CPU cores
    the debug model's step takes ~3.4x less time than the per-parameter loop, and its weights differ from the
    loop's by ~2e-7 relative after 20 steps (bench/bench_step.py). False: the per-parameter loop. DeepSpeed's CPU
    Adam (parallel.offload_optimizer) has its own kernel and ignores it."""

    def validate(self, where: str = "optim", total_steps: int | None = None) -> None:
        """Raises ConfigError on an impossible setting; with `total_steps` (the optimizer steps of the run or
        stage these settings drive) also when the warmup would not end within the run."""
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr={self.lr} must be positive")
        if self.eps <= 0:
            raise ConfigError(f"{where}.eps={self.eps} must be positive (it keeps Adam's update finite)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{where}.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError(f"{where}.warmup_steps, grad_clip and weight_decay must be non-negative")
        for b in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, b) < 1.0:
                raise ConfigError(f"{where}.{b}={getattr(self, b)} must be in [0, 1)")
        # A warmup as long as the run is allowed (the LR reaches its peak on the last step); a longer one
        # would silently never reach the configured lr nor run the cosine decay.
        if total_steps is not None and self.warmup_steps > total_steps:
            raise ConfigError(f"{where}.warmup_steps={self.warmup_steps} is longer than the run's {total_steps} "
                              "optimizer steps: lower it or train longer")


@dataclass
class TrainConfig:
    max_steps: int | None = None
    """Optimizer steps; give this or `tokens` (steps = ceil(tokens / (global_batch_size·seq_len)))."""
    tokens: int | None = None
    global_batch_size: int = 8
    """Sequences per optimizer step, summed over data-parallel ranks and accumulation micro-steps."""
    micro_batch_size: int = 2
    """Sequences per forward pass on one rank."""
    seed: int = 0
    eval_every: int = 50
    """Steps between evaluations on the held-out split; 0 evaluates only at the end."""
    eval_batches: int = 4
    log_every: int = 1
    compile: bool = False
    """torch.compile each transformer block (llm/train/compile.py), in debug mode and under the launcher.

    Off by default: on 2 CPU cores it trains the debug model ~1.1-1.2x faster once compiled, but compiling costs
    about a minute per process at start-up (longer than many debug runs), and losses match eager only to fp32
    rounding (bench/bench_step.py, tests/llm/train/test_compile.py)."""

    def validate(self, where: str = "train") -> None:
        if (self.max_steps is None) == (self.tokens is None):
            raise ConfigError(f"set exactly one of {where}.max_steps and {where}.tokens")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"{where}.max_steps={self.max_steps} must be positive")
        if self.tokens is not None and self.tokens <= 0:
            raise ConfigError(f"{where}.tokens={self.tokens} must be positive")
        if self.micro_batch_size <= 0 or self.global_batch_size <= 0:
            raise ConfigError(f"{where}.micro_batch_size and {where}.global_batch_size must be positive")
        if self.global_batch_size % self.micro_batch_size != 0:
            raise ConfigError(f"{where}.micro_batch_size={self.micro_batch_size} does not divide "
                              f"{where}.global_batch_size={self.global_batch_size}")
        if self.eval_every < 0 or self.eval_batches <= 0 or self.log_every <= 0:
            raise ConfigError(f"{where}.eval_every must be >= 0, eval_batches and log_every positive")
        if not 0 <= self.seed < 2 ** 32:  # the data order comes from numpy.random.RandomState(seed): its range
            raise ConfigError(f"{where}.seed={self.seed} must be in [0, 2**32)")


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


@dataclass
class CheckpointConfig:
    dir: str | None = None
    """Defaults to <out_dir>/checkpoints. Re-running a command resumes from the latest complete one here."""
    every: int = 0
    """Steps between checkpoints; 0 saves only at the end of training."""
    keep: int = 2
    """Most recent checkpoints kept; older ones are deleted."""
    resume: bool = True
    """Resume from the latest complete checkpoint in `dir` if there is one (same layout only)."""
    init_from: str | None = None
    """Start a new run from the weights of a checkpoint directory (or model.pt) saved under ANY layout:
    how a run is resharded. The optimizer starts fresh; ignored when `dir` already holds a checkpoint."""
    reshard: bool = False
    """When the latest checkpoint's layout differs from this run's, convert it to DeepSpeed's universal format
    and resume from it with its optimizer state (parallel/universal.py: ZeRO>=1 on both sides, no pipeline)."""
    allow_changes: list[str] = field(default_factory=list)
    """Dotted keys (e.g. train.global_batch_size) that may differ from the checkpoint's config on resume. The
    keys that decide which samples each step reads are refused otherwise (llm/train/resume.py)."""

    def validate(self, where: str = "checkpoint") -> None:
        if self.every < 0 or self.keep < 1:
            raise ConfigError(f"{where}.every must be >= 0 and {where}.keep >= 1")


@dataclass
class LoggingConfig:
    """Where the scalars of metrics.jsonl are also written (llm/train/loggers.py); the main rank writes them."""

    tensorboard: bool = False
    """Write TensorBoard event files to <out_dir>/tensorboard (watch with `tensorboard --logdir <out_dir>`)."""
    wandb: str | None = None
    """Weights & Biases: null (off), 'offline' (a local run under <out_dir>/wandb, no network; upload it later
    with `wandb sync`) or 'online'. Needs the `wandb` extra (`pip install -e .[wandb]`)."""
    wandb_project: str = "llm-forge"
    """W&B project the run is filed under."""
    wandb_name: str | None = None
    """W&B run name; defaults to the name of out_dir. A resumed run logs a new W&B run of the same name."""

    def validate(self, where: str = "logging") -> None:
        if self.wandb not in (None, "offline", "online"):
            raise ConfigError(f"{where}.wandb={self.wandb!r} must be null (off), 'offline' or 'online'")
        if self.wandb is not None and not _installed("wandb"):
            raise ConfigError(f"{where}.wandb={self.wandb!r} needs the wandb package: pip install -e .[wandb] "
                              f"(or set {where}.wandb=null)")
        if not self.wandb_project:
            raise ConfigError(f"{where}.wandb_project must not be empty")


def _installed(module: str) -> bool:
    """Whether `module` is importable, without importing it (wandb alone takes seconds to import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: imports of it are blocked
        return False


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100))
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    out_dir: str = "runs/debug"

    def __post_init__(self) -> None:
        # Derived at construction, not in validate(): validating must leave the config as it found it.
        if self.checkpoint.dir is None:
            self.checkpoint.dir = str(Path(self.out_dir) / "checkpoints")

    def validate(self) -> None:
        """Raises ConfigError naming the section, key and rule; never changes the config."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "optim" and hasattr(value, "validate"):
                value.validate(f.name)
        # After train: the warmup is checked against the run's length, which train defines.
        self.optim.validate("optim", total_steps=self.total_steps)

    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch_size * self.model.seq_len

    @property
    def total_steps(self) -> int:
        if self.train.max_steps is not None:
            return self.train.max_steps
        return -(-self.train.tokens // self.tokens_per_step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_from_dict(raw: dict, source: str = "<dict>") -> RunConfig:
    return typed_yaml.build_validated(RunConfig, raw, source)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML run config, apply dotted overrides, validate. Raises ConfigError on any user mistake."""
    return typed_yaml.load(RunConfig, path, overrides, shorthands={"precision": PrecisionConfig.SHORTHAND})
