"""Budget → compute-optimal spec.

`plan(flops)` picks N and D from a scaling law (llm.scaling.laws), turns N into a concrete shape (llm.shape),
re-derives D = C / 6N from the exact N of that shape so the budget holds, and attaches the batch size and
learning rate of a stated rule. llm/scaling/plan_output.py prints a spec as a table and writes it as a run config
(`config_dict`, llm.config's schema).

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

from llm.config import ModelConfig
from llm.cost.flops import datasheet_peak_flops, flops_per_token
from llm.scaling.laws import (BESIROGLU_2024, DEFAULT_APPROACH, LAWS, ParametricLaw, PowerLawFrontier,
                              compute_for_params, compute_optimal, get_law)
from llm.shape import (MAX_TARGET_OVERSHOOT, STANDARD, ShapeRules, TargetTooLarge, count_params,
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
    # D from the FLOPs a token costs (6N, llm/cost/flops.py), not from N: for a mixture of experts a token uses only
    # the experts it is routed to, so the two differ (the sweep's MoE families, llm/sweep/families.py).
    d = int(flops // flops_per_token(cfg, "6N"))
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
        out = [f"{name} = {abbreviate(x)} is outside the fitted {abbreviate(a)}-{abbreviate(b)}"
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


def abbreviate(x: float) -> str:
    """A count in a few digits with its suffix: 1.23B, 70M, 512."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
