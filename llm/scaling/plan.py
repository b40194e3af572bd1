"""Budget → compute-optimal spec → table, JSON, or a pretraining config.

`plan(flops)` picks N and D from a scaling law (llm.scaling.laws), turns N into a concrete shape (llm.shape),
re-derives D = C / 6N from the exact N of that shape so the budget holds, and attaches the batch size and
learning rate of a stated rule. `config_dict(spec)` writes that as a run config in llm.config's schema.

Training-hyperparameter rules (each cited; they are starting points, not tuned optima):
  * batch size and peak LR: DeepSeek LLM (DeepSeek-AI 2024, arXiv:2401.02954, §3.1, fitted on 1e17-3e20
    FLOPs): B_opt = 0.2920 · C^0.3271 tokens, η_opt = 0.3118 · C^-0.1250 (AdamW, β = (0.9, 0.95), wd 0.1).
    The batch is rounded to a power of two in sequences. DeepSeek's C counts non-embedding FLOPs incl.
    attention; we plug in the 6ND budget, a few percent apart at these shapes.
  * schedule: linear warmup over 1% of the steps (Pythia, Biderman et al. 2023, arXiv:2304.01373), then
    cosine decay over exactly the D tokens to 10% of the peak LR: Hoffmann et al. 2022 (arXiv:2203.15556)
    §3.1 and App. B found a cosine cycle longer than training by more than ~25% hurts, and decay by 10×.
Loss caveats: the parametric laws were fitted on Chinchilla's runs, "over 400 language models ranging from 70
million to over 16 billion parameters on 5 to 500 billion tokens" (Hoffmann et al. 2022, arXiv:2203.15556,
abstract; Besiroglu et al. 2024, arXiv:2404.10102, refit the same runs); a sweep's law on its own budgets. A
prediction outside that range is flagged, and one at or above ln V (the loss of guessing uniformly over the
vocabulary, which any trained model beats) is called meaningless.
No torch here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from llm.config import ModelConfig, config_from_dict
from llm.cost.flops import datasheet_peak_flops, flops_per_token
from llm.cost.layout import Layout
from llm.scaling.laws import (BESIROGLU_2024, DEFAULT_APPROACH, LAWS, ParametricLaw, PowerLawFrontier,
                              compute_for_params, compute_optimal, get_law)
from llm.shape import (MAX_TARGET_OVERSHOOT, SHAPE_RULES, STANDARD, ShapeRules, TargetTooLarge, count_params,
                            count_params_non_embedding, design_shape)
from typed_yaml import ConfigError

# DeepSeek LLM 2024 (arXiv:2401.02954) §3.1, eqs. for the optimal batch size (tokens) and learning rate.
DEEPSEEK_2024_BATCH = (0.2920, 0.3271)
DEEPSEEK_2024_LR = (0.3118, -0.1250)
WARMUP_FRACTION = 0.01
MIN_LR_RATIO = 0.1
DEFAULT_DATA_PATH = "runs/data/python_docs/data"
DEFAULT_TOKENIZER = "runs/data/python_docs/tokenizer.model"
"""What launch/prepare_data.py writes beside DEFAULT_DATA_PATH (configs/debug.yaml reads the same two)."""
HOFFMANN_2022_FIT_RANGE = ((70e6, 16e9), (5e9, 500e9))
"""(N, D) ranges of the runs the Chinchilla laws (and Besiroglu et al.'s refit) were fitted on (module docstring)."""
SHAPE_FIELDS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size", "seq_len",
                "tie_embeddings")


@dataclass
class Spec:
    """A compute-optimal training spec. N counts all parameters (Chinchilla), D = C / 6N."""

    flops: float
    approach: str
    law: str
    n_params_target: float
    """N_opt(C) straight from the law, before rounding to a shape."""
    model: ModelConfig
    tp_degrees: tuple[int, ...]
    """Tensor-parallel degrees the shape was designed to divide (heads, d_ff, padded vocabulary)."""
    n_params: int
    """Exact total parameters of `model`, embeddings included (= sum(p.numel()))."""
    n_params_non_embedding: int
    n_tokens: int
    tokens_per_param: float
    predicted_loss: float
    """Nats/token on the loss law's data (Chinchilla's MassiveText, or a sweep's own corpus and tokenizer); the
    level does not transfer to other data."""
    loss_law: str
    flops_per_token_6n: float
    flops_per_token_palm: float
    flops_palm: float
    """Training FLOPs with PaLM App. B's count (attention included) for these n_tokens."""
    global_batch_size: int
    micro_batch_size: int
    lr: float
    total_steps: int
    warmup_steps: int
    loss_warning: str | None = None
    """Why `predicted_loss` should not be trusted (outside the law's fitted range, or at or above ln V), or None."""
    accelerator: str | None = None
    """The device the time is for: a llm/cost/flops.py name, a name given with its peak, or a measured CPU."""
    mfu: float | None = None
    peak_flops: float | None = None
    """Dense peak FLOP/s of one device the time is computed with: the datasheet's bf16 peak of `accelerator`,
    a measured CPU peak, or one the user gave."""
    train_seconds: float | None = None
    """Seconds on one device to run the PaLM-counted FLOPs (`flops_palm`, the count MFU is measured with) at `mfu`
    of `peak_flops`."""
    accelerator_hours: float | None = None
    """train_seconds / 3600: device-hours."""
    cost: float | None = None
    """accelerator_hours × the price per device-hour given, or None."""
    law_note: str | None = None
    """Where the law came from and its interval, for a law fitted by a sweep (launch/plan.py --law)."""
    data_tokens: int | None = None
    """Tokens in the prepared data the run will read (launch/plan.py --data-path), when known."""
    data_warning: str | None = None
    """Why D is more than that data gives without costly repetition (repetition_warning), or None."""
    shape_rules: str = STANDARD.name
    """The llm/shape.py rules the shape was designed under (SHAPE_RULES)."""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = {k: getattr(self.model, k) for k in SHAPE_FIELDS}
        return out


# Muennighoff et al. 2023, "Scaling Data-Constrained Language Models" (arXiv:2305.16264): up to ~4 epochs of
# repeated data train about as well as unique data; their fitted decay constant R*_D ≈ 15.4 means that after
# roughly 16 epochs more passes are worth little (the value of a repeated token decays as exp(-R/R*_D)).
FREE_EPOCHS = 4
WORTHLESS_EPOCHS = 16


def repetition_warning(n_tokens: int, data_tokens: int) -> str | None:
    """Why training on `n_tokens` drawn from `data_tokens` unique tokens will not reach the predicted loss, or None
    (at most FREE_EPOCHS passes)."""
    if data_tokens <= 0:
        return f"the data holds no tokens; D = {n_tokens:,} cannot be read from it"
    epochs = n_tokens / data_tokens
    if epochs <= FREE_EPOCHS:
        return None
    worth = ("past ~16 epochs further passes are worth little" if epochs > WORTHLESS_EPOCHS
             else "each pass past the 4th is worth less")
    return (f"D is {epochs:.1f} passes over the data's {data_tokens:,} tokens; the predicted loss assumes unique "
            f"tokens: up to ~4 epochs cost little, {worth} (Muennighoff et al. 2023); add data, or plan a smaller "
            f"budget (about {FREE_EPOCHS * data_tokens:,} tokens fit 4 epochs)")


def _batch_and_lr(flops: float, seq_len: int) -> tuple[int, float]:
    k_b, e_b = DEEPSEEK_2024_BATCH
    k_lr, e_lr = DEEPSEEK_2024_LR
    sequences = max(1.0, k_b * flops ** e_b / seq_len)
    return 2 ** round(math.log2(sequences)), k_lr * flops ** e_lr


def plan(flops: float, approach: str | ParametricLaw | PowerLawFrontier = DEFAULT_APPROACH, vocab_size: int = 32000,
         seq_len: int = 2048, tp_degrees: tuple[int, ...] = (1, 2, 4, 8), tie_embeddings: bool = False,
         accelerator: str | None = None, mfu: float | None = None, pp_degrees: tuple[int, ...] = (1, 2, 4, 8),
         law_note: str | None = None, shapes: ShapeRules = STANDARD, peak: float | None = None,
         price_per_hour: float | None = None) -> Spec:
    """Plan a compute-optimal run for `flops` training FLOPs (C = 6ND). Raises ValueError on bad input.
    approach: a law name of llm.scaling.laws or a law object (e.g. a sweep's, llm/scaling/law.py); law_note: a line
    about that law (its interval) to print with the plan. pp_degrees: pipeline degrees the layer count should
    split into; shapes: the rules the shape is designed under (llm/shape.py `design_shape`).
    accelerator, mfu, peak, price_per_hour: see `spec_for_shape`."""
    law = get_law(approach)
    n_target, _ = compute_optimal(flops, law)
    try:
        cfg = design_shape(n_target, vocab_size=vocab_size, seq_len=seq_len, tp_degrees=tp_degrees,
                           tie_embeddings=tie_embeddings, pp_degrees=pp_degrees, rules=shapes)
    except TargetTooLarge as e:
        c_max = compute_for_params(e.largest * MAX_TARGET_OVERSHOOT, law)
        raise ConfigError(f"budget C={flops:.3g} is past what the shape designer can build: {e}; the largest "
                         f"budget supported under {law.name} is C={c_max:.3g} FLOPs") from None
    return spec_for_shape(flops, cfg, law, n_target, tp_degrees, accelerator, mfu, law_note, shapes.name, peak,
                          price_per_hour)


def spec_for_shape(flops: float, cfg: ModelConfig, law: ParametricLaw | PowerLawFrontier, n_target: float,
                   tp_degrees: tuple[int, ...] = (1,), accelerator: str | None = None, mfu: float | None = None,
                   law_note: str | None = None, shape_rules: str = STANDARD.name, peak: float | None = None,
                   price_per_hour: float | None = None) -> Spec:
    """The spec of training the shape `cfg` on a budget of `flops`: D = C / 6N from its exact N, batch and LR from
    the DeepSeek rule, the schedule. plan() calls this for the law's shape, llm/scaling/grid.py for each grid point.
    n_target: the N the shape was designed for. accelerator: the device the time is for (a name for the table
    and JSON); with `mfu` the time is predicted, against `peak` FLOP/s when given (a measured CPU, a device not
    in llm/cost/flops.py), else the datasheet bf16 peak of `accelerator`. price_per_hour: per device-hour, for
    the cost. Raises ValueError when the budget buys less than one sequence."""
    n, seq_len = count_params(cfg), cfg.seq_len
    d = int(flops // (6 * n))
    if d < seq_len:
        raise ConfigError(f"budget C={flops:.3g} buys only {d} tokens for a {n:,}-parameter model: less than one "
                         f"sequence of {seq_len}; raise the budget")
    # A sweep's law (llm/scaling/law.py) carries its own parametric fit, on its own data, to predict the loss with.
    loss_law = law if isinstance(law, ParametricLaw) else getattr(law, "loss_law", None) or BESIROGLU_2024
    gbs, lr = _batch_and_lr(flops, seq_len)
    gbs = min(gbs, max(1, 2 ** int(math.log2(d // seq_len))))  # at least one step
    steps = -(-d // (gbs * seq_len))
    seconds = hours = cost = None
    if accelerator is not None:
        if mfu is None or not 0 < mfu <= 1:
            raise ConfigError(f"mfu={mfu} must be in (0, 1]")
        peak = peak if peak is not None else datasheet_peak_flops(accelerator, "bf16")
        # MFU is measured with PaLM's count (attention included), so the time must come from it too: with 6N
        # it comes out 7-9% short at these shapes.
        seconds = flops_per_token(cfg, "palm") * d / (peak * mfu)
        hours = seconds / 3600.0
        cost = None if price_per_hour is None else hours * price_per_hour
    predicted_loss = loss_law.loss(n, d)
    approach = next((k for k, v in LAWS.items() if v is law), law.name)
    return Spec(
        flops=float(flops), approach=approach, law=law.name, n_params_target=float(n_target), model=cfg,
        tp_degrees=tuple(int(t) for t in tp_degrees), n_params=n,
        n_params_non_embedding=count_params_non_embedding(cfg), n_tokens=d,
        tokens_per_param=d / n, predicted_loss=predicted_loss, loss_law=loss_law.name,
        loss_warning=loss_warning(predicted_loss, n, d, flops, cfg.vocab_size, law),
        flops_per_token_6n=flops_per_token(cfg, "6N"), flops_per_token_palm=flops_per_token(cfg, "palm"),
        flops_palm=flops_per_token(cfg, "palm") * d, global_batch_size=gbs, micro_batch_size=min(gbs, 4),
        lr=lr, total_steps=steps, warmup_steps=max(1, round(WARMUP_FRACTION * steps)),
        accelerator=accelerator, mfu=mfu, peak_flops=peak if seconds is not None else None, train_seconds=seconds,
        accelerator_hours=hours, cost=cost, law_note=law_note, shape_rules=shape_rules)


def loss_warning(loss: float, n_params: float, n_tokens: float, flops: float, vocab_size: int,
                 law: ParametricLaw | PowerLawFrontier) -> str | None:
    """Why a predicted loss (nats/token) is not to be trusted, or None (module docstring): at or above ln V, or
    N, D (Chinchilla's and Besiroglu's laws) or C (a sweep's law, its `flops_range`) outside what it was fitted on."""
    ln_v = math.log(vocab_size)
    lo, hi = getattr(law, "flops_range", (0.0, 0.0))
    if hi:
        where = "" if lo <= flops <= hi else f"C = {flops:.3g} is outside the sweep's budgets [{lo:.3g}, {hi:.3g}]"
    else:
        (n_lo, n_hi), (d_lo, d_hi) = HOFFMANN_2022_FIT_RANGE
        out = [f"{name} = {_human(x)} is outside the fitted {_human(a)}-{_human(b)}"
               for name, x, a, b in (("N", n_params, n_lo, n_hi), ("D", n_tokens, d_lo, d_hi)) if not a <= x <= b]
        where = "; ".join(out) + (" (Hoffmann et al. 2022)" if out else "")
    if loss >= ln_v:
        return (f"meaningless: at or above ln V = {ln_v:.2f}, the loss of guessing uniformly over {vocab_size:,} "
                "tokens" + (f"; the law is extrapolated: {where}" if where else ""))
    return f"extrapolated: {where}" if where else None


def flops_from_hours(hours: float, accelerator: str, mfu: float, dtype: str = "bf16",
                     peak: float | None = None) -> float:
    """FLOPs that chip-hours buy: hours · 3600 · dense peak · MFU, counted as MFU is (PaLM App. B). peak: FLOP/s
    of one device (default the datasheet's for `accelerator`). Raises ValueError on unknown chips or bad numbers."""
    if not hours > 0:
        raise ConfigError(f"gpu-hours={hours} must be positive")
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu={mfu} must be in (0, 1]")
    return hours * 3600.0 * (peak if peak is not None else datasheet_peak_flops(accelerator, dtype)) * mfu


def plan_for_hours(hours: float, accelerator: str, mfu: float, **kwargs) -> Spec:
    """The compute-optimal plan whose PaLM-counted FLOPs take `hours` chip-hours at `mfu`: the 6ND budget the
    scaling law takes is those FLOPs × 6N / (6N + attention) of the shape it leads to, found by fixed-point
    iteration (the shape changes in steps, so a few rounds settle it). kwargs go to `plan` (`peak` included)."""
    palm_budget = flops_from_hours(hours, accelerator, mfu, peak=kwargs.get("peak"))
    budget = palm_budget
    for _ in range(8):
        spec = plan(budget, accelerator=accelerator, mfu=mfu, **kwargs)
        nxt = palm_budget * spec.flops_per_token_6n / spec.flops_per_token_palm
        if abs(nxt / budget - 1) < 1e-9:
            break
        budget = nxt
    return spec


def _human(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _count(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def format_seconds(seconds: float) -> str:
    """A duration at its scale: '42 s', '3.5 min', '2.1 h', '3.2 days'."""
    for unit, scale in (("days", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds >= scale * (2 if unit == "days" else 1) or unit == "s":
            return f"{_count(seconds / scale)} {unit}"


def format_table(spec: Spec) -> str:
    m = spec.model
    rows = [
        ("budget C (6ND)", f"{spec.flops:.3e} FLOPs"),
        ("law", spec.law if spec.approach == spec.law else f"{spec.law} (approach {spec.approach})"),
        *([("law interval", spec.law_note)] if spec.law_note else []),
        ("N_opt from the law", _human(spec.n_params_target)),
        ("shape", f"n_layers={m.n_layers} d_model={m.d_model} n_heads={m.n_heads} n_kv_heads={m.n_kv_heads} "
                  f"head_dim={m.head_dim} d_ff={m.d_ff} vocab_size={m.vocab_size} seq_len={m.seq_len}"
                  + (" tied" if m.tie_embeddings else "")
                  + ("" if spec.shape_rules == STANDARD.name else f" ({spec.shape_rules} shape rules)")),
        ("N of the shape", f"{spec.n_params:,} total, {spec.n_params_non_embedding:,} non-embedding"),
        ("D = C / 6N", f"{spec.n_tokens:,} tokens ({_human(spec.n_tokens)})"),
        ("tokens per parameter", f"{spec.tokens_per_param:.1f}"),
        ("predicted loss", f"{spec.predicted_loss:.3f} nats/token ({spec.loss_law}, "
                           + ("the sweep's own data and tokenizer)" if spec.loss_law.startswith("sweep")
                              else "Chinchilla's data)")),
        ("FLOPs/token", f"6N {spec.flops_per_token_6n:.3e}; PaLM App. B {spec.flops_per_token_palm:.3e}"),
        ("C with attention", f"{spec.flops_palm:.3e} FLOPs"),
        ("batch", f"{spec.global_batch_size} x {m.seq_len} tokens (DeepSeek 2024 rule), micro {spec.micro_batch_size}"),
        ("peak LR", f"{spec.lr:.3g} (DeepSeek 2024 rule), cosine to {MIN_LR_RATIO:g}x"),
        ("steps", f"{spec.total_steps:,} ({spec.warmup_steps:,} warmup)"),
    ]
    if spec.loss_warning:
        rows.insert(next(i for i, (k, _) in enumerate(rows) if k == "predicted loss") + 1,
                    ("  WARNING", f"predicted loss {spec.loss_warning}"))
    at = next(i for i, (k, _) in enumerate(rows) if k == "tokens per parameter") + 1
    if spec.data_warning:
        rows.insert(at, ("  WARNING", spec.data_warning))
    if spec.data_tokens is not None:
        passes = spec.n_tokens / max(spec.data_tokens, 1)
        rows.insert(at, ("data", f"{spec.data_tokens:,} tokens in --data-path: D is {passes:.3g} passes over it"))
    if spec.train_seconds is not None:
        rows.append(("time", f"{format_seconds(spec.train_seconds)} on one {spec.accelerator} at {spec.mfu:.0%} MFU "
                             f"of {spec.peak_flops / 1e12:.3g} TFLOP/s "
                             f"({_count(spec.accelerator_hours)} device-hours)"))
    if spec.cost is not None:
        rows.append(("cost", f"{spec.cost:,.2f} at the price per device-hour given"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def config_dict(spec: Spec, data_paths: list[str] | None = None, out_dir: str | None = None,
                layout: Layout | None = None, tokenizer: str | None = None, precision: str = "bf16") -> dict[str, Any]:
    """A run config (llm.config schema) for `spec`, validated with config_from_dict. Raises ConfigError.
    layout: the parallel layout and micro-batch size to write (default: one device, micro-batch up to 4).
    data_paths, tokenizer: the prepared datasets and the tokenizer they were made with (default: the bundled
    corpus's, DEFAULT_DATA_PATH and DEFAULT_TOKENIZER); the tokenizer is what export and evaluation read.
    precision: bf16 (GPUs), or fp32 for a CPU, whose matmuls are native in fp32 only (configs/debug.yaml)."""
    raw = {
        "model": {k: getattr(spec.model, k) for k in SHAPE_FIELDS},
        "data": {"paths": list(data_paths or [DEFAULT_DATA_PATH]), "tokenizer": tokenizer or DEFAULT_TOKENIZER},
        "optim": {"lr": float(f"{spec.lr:.4g}"), "min_lr_ratio": MIN_LR_RATIO, "warmup_steps": spec.warmup_steps,
                  "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0},
        "train": {"tokens": spec.n_tokens, "global_batch_size": spec.global_batch_size,
                  "micro_batch_size": layout.micro_batch_size if layout else spec.micro_batch_size,
                  "eval_every": max(1, spec.total_steps // 20),
                  "log_every": max(1, min(10, spec.total_steps // 100))},
        "parallel": layout.parallel_dict() if layout else {"tensor": 1, "pipeline": 1, "zero_stage": 0},
        "precision": precision,
        "checkpoint": {"every": max(1, spec.total_steps // 10), "keep": 2},
        "out_dir": out_dir or f"runs/pretrain_{_human(spec.n_params)}",
    }
    config_from_dict(raw, source="plan")
    return raw


def config_header(spec: Spec, predictions: list[str] | None = None) -> str:
    """The comment block `launch/plan.py --write-config` puts above the YAML: how every number was chosen,
    with the TP degrees the shape and the vocabulary padding were actually computed for. predictions: lines
    describing the chosen layout and its predicted memory and time (llm/cost/cluster.py), if one was chosen."""
    rules = SHAPE_RULES[spec.shape_rules]
    m, (lo, hi), (flo, fhi) = spec.model, rules.aspect_band, rules.fallback_band
    head_rule = "64 below d_model 2048, else 128" if rules.head_dim is None else f"fixed by the {rules.name} rules"
    tp = ", ".join(str(t) for t in spec.tp_degrees)
    pad = 64 * math.lcm(*spec.tp_degrees)
    lines = [
        f"Pretraining config written by launch/plan.py for a budget of C = {spec.flops:.3e} FLOPs (C = 6ND).",
        f"Law: {spec.law}. N = {spec.n_params:,} parameters (all, embeddings included), "
        f"D = C / 6N = {spec.n_tokens:,} tokens ({spec.tokens_per_param:.1f} per parameter).",
        f"Shape (llm/shape.py, {rules.name} rules): d_model/n_layers = {m.d_model / m.n_layers:.0f} "
        f"(rule: {lo} to {hi}, else {flo} to {fhi}), head_dim {m.head_dim} ({head_rule}),",
        f"  n_heads, n_kv_heads and d_ff divisible by each TP degree in ({tp}), d_ff = 8/3 d_model rounded up to "
        f"{math.lcm(rules.d_ff_multiple, *spec.tp_degrees)},",
        f"  vocab_size padded to {m.vocab_size}, a multiple of 64*lcm({tp}) = {pad}.",
        "Batch and peak LR: DeepSeek LLM 2024 (arXiv:2401.02954) B = 0.2920 C^0.3271 tokens (power of two",
        "  in sequences), lr = 0.3118 C^-0.1250. micro_batch_size is a starting point: set what fits.",
        "Schedule: warmup 1% of steps (Pythia), cosine over exactly train.tokens down to 10% of the peak",
        "  (Chinchilla 2022: a cycle longer than training hurts; decay by 10x).",
    ]
    lines += predictions or ["parallel.* is left at one device: choose the layout for your cluster (--gpus N)."]
    return "".join(f"# {line}\n" for line in lines)
