"""How a run trains: optimizer and schedule, steps and batch, checkpoints, logging."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from typed_yaml import ConfigError


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to min_lr_ratio·lr (Chinchilla decays to 10%)."""

    lr: float = 3e-4
    """Peak learning rate, reached at the end of the warmup. 3e-4 suits the small debug models; larger models
    want lower (GPT-3 used 6e-4 at 125M params down to 0.6e-4 at 175B)."""
    min_lr_ratio: float = 0.1
    """The cosine decays to min_lr_ratio·lr at the last step, in [0, 1] (Chinchilla: 10x decay)."""
    warmup_steps: int = 10
    """Optimizer steps of linear warmup to lr. At most the run's length (refused above it); equal to it, the whole
    run warms up and never decays, which the run warns about at start-up (RunConfig.warnings)."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay, applied to the matrices (embeddings included) and not to the norms' gains
    (llm/train/optim.py); 0.1 as in GPT-3 and Llama."""
    beta1: float = 0.9
    """Adam's decay rate of the gradient's running mean, in [0, 1)."""
    beta2: float = 0.95
    """Adam's decay rate of the squared gradient's running mean, in [0, 1); 0.95 rather than torch's 0.999, as in
    GPT-3 and Llama, for stability at large batch."""
    eps: float = 1e-8
    """Added to Adam's denominator, keeping the update finite where a gradient's running variance is ~0."""
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

    def warmup_warning(self, where: str, total_steps: int, length: str) -> str | None:
        """One line when the warmup fills the whole run (validate allows it: the LR peaks on the last step), which
        trains only at a rising LR and never runs the cosine decay: rarely meant outside a smoke test. `length`
        names the setting that fixes the run's length, e.g. "train.max_steps=10"."""
        if 0 < total_steps <= self.warmup_steps:
            return (f"warning: {where}.warmup_steps={self.warmup_steps} covers the whole run ({length}): the LR only "
                    "rises and never decays; lower the warmup (a few percent of the run is usual) or train longer")
        return None


@dataclass
class TrainConfig:
    max_steps: int | None = None
    """Optimizer steps; give this or `tokens` (steps = ceil(tokens / (global_batch_size·seq_len)))."""
    tokens: int | None = None
    """Training tokens, instead of max_steps: rounded up to whole steps of global_batch_size·seq_len tokens."""
    global_batch_size: int = 8
    """Sequences per optimizer step, summed over data-parallel ranks and accumulation micro-steps."""
    micro_batch_size: int = 2
    """Sequences per forward pass on one rank."""
    seed: int = 0
    """Seeds the weight init and the shuffle of the training samples, in [0, 2**32). Fixed on resume: it decides
    which samples each step reads (llm/train/resume.py)."""
    eval_every: int = 50
    """Steps between evaluations on the held-out split; 0 evaluates only at the end."""
    eval_batches: int = 4
    """Global batches of the held-out split each evaluation reads, the same samples every time and in every
    layout (eval_batches·global_batch_size sequences)."""
    log_every: int = 1
    """Steps between metrics lines (metrics.jsonl and the console); the last step is always logged."""
    compile: bool = False
    """torch.compile each transformer block (llm/train/compile.py), in debug mode and under the launcher; in
    debug mode the chunked LM head + loss too.

    Exact enough: losses within 1e-5 relative of eager over 20 steps (tests/llm/train/test_compile.py; measured
    6e-8). Faster once compiled: bench/bench_step.py on 2 CPU cores, debug shape, fastest / per-round-median
    ratios: compiled / eager 1.15 / 1.17, compiled / LlamaForCausalLM 1.12 / 1.15 at load 2-4 (1.22-1.34 at
    load 11-13). Off by default all the same: compiling costs 15-90 s per process on those cores (170 s for a cold
    cache at load 12), while configs/debug.yaml's 200 steps of 4,096 tokens take ~170 s eager (4,860 tokens/s at
    load 2-4), so a 1.15x step saves ~22 s, less than it costs. Turn it on for runs of thousands of steps, where
    the compile is paid once."""

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
