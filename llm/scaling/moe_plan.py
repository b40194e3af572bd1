"""Budget → compute-optimal mixture-of-experts spec, with the dense plan beside it (`launch/plan.py --moe`).

`plan_moe(flops)`:
  1. the law's optimum (llm/scaling/moe_law.py, Krajewski et al. 2024): granularity G, active parameters, tokens,
     at their expansion rate E = 64;
  2. a concrete shape: the dense shape designer (llm/shape.py `design_shape`) sized for those active parameters plus
     the embeddings, its every feed-forward made an MoE layer of E·G experts of width d_ff / G, top_k = G (the
     paper replaces every feed-forward). Where G does not divide the designed d_ff, the largest power of two that
     does is taken, and the table says so;
  3. D = C / (FLOPs per token of that shape), counted as the budget of the dense plan is (6 × the parameters a token
     uses, embeddings included, as Chinchilla's 6N) plus the paper's routing cost beyond the router matmul,
     (c_r − c_f) = 8 FLOPs per router weight;
  4. its predicted loss under the law, N being the shape's exact total non-embedding count;
  5. the dense alternative: llm/scaling/plan.py `plan` for the same budget (Chinchilla's law as refitted by
     Besiroglu et al. 2024), with its own predicted loss, and, like for like, the loss Krajewski et al.'s dense fit
     (same data as their MoE fit) predicts for it. Only the two Krajewski losses compare: the Chinchilla loss is on
     MassiveText, theirs on C4.
Batch size and learning rate follow the dense plan's DeepSeek 2024 rule on C (a dense rule; a starting point).
No torch here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from llm.config import ModelConfig
from llm.config.model import MoEConfig
from llm.cost.flops import flops_per_token
from llm.scaling.moe_law import (EXPANSION_RATE, FIT_RANGE, FORWARD_BACKWARD_FLOPS, KRAJEWSKI_2024_DENSE,
                                 KRAJEWSKI_2024_MOE, ROUTER_FLOPS, MoEOptimum, compute_optimal_moe)
from llm.scaling.plan import SHAPE_FIELDS, WARMUP_FRACTION, Spec, _batch_and_lr, abbreviate, flops_from_hours, plan
from llm.shape import STANDARD, ShapeRules, count_active_params, count_params, design_shape, router_params
from typed_yaml import ConfigError


@dataclass
class MoESpec:
    """A compute-optimal MoE spec and the dense plan for the same budget."""

    flops: float
    law: str
    optimum: MoEOptimum
    """The law's own optimum (non-embedding counts, its d_model = 64 · n_blocks)."""
    model: ModelConfig
    granularity: int
    """G of `model`: the law's, or the largest power of two below it that divides d_ff."""
    n_params: int
    """Total parameters of `model`, embeddings included (= sum(p.numel()))."""
    n_params_active: int
    """Parameters one token uses, embeddings included (llm/shape.py `count_active_params`)."""
    n_tokens: int
    flops_per_token: float
    """The budget's count: 6 · n_params_active + 8 per router weight (module docstring)."""
    flops_per_token_palm: float
    """PaLM App. B with the router, active (llm/cost/flops.py): what MFU is measured with."""
    predicted_loss: float
    """Nats/token on C4 with the GPT-2 tokenizer (the law's data)."""
    loss_warning: str | None
    dense: Spec
    dense_loss_same_data: float
    """Krajewski et al.'s dense fit for the dense plan's N (non-embedding) and D: like for like with predicted_loss."""
    global_batch_size: int
    lr: float
    total_steps: int
    warmup_steps: int
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        moe = dataclasses.asdict(self.model.moe)
        return {"flops": self.flops, "law": self.law, "optimum": dataclasses.asdict(self.optimum),
                "model": {**{k: getattr(self.model, k) for k in SHAPE_FIELDS}, "moe": moe},
                "granularity": self.granularity, "n_params": self.n_params, "n_params_active": self.n_params_active,
                "n_tokens": self.n_tokens, "flops_per_token": self.flops_per_token,
                "flops_per_token_palm": self.flops_per_token_palm, "predicted_loss": self.predicted_loss,
                "loss_warning": self.loss_warning, "global_batch_size": self.global_batch_size, "lr": self.lr,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "note": self.note,
                "dense": self.dense.to_json(), "dense_loss_same_data": self.dense_loss_same_data}


def budget_flops_per_token(cfg: ModelConfig) -> float:
    """FLOPs per token the MoE plan budgets with (module docstring, step 3)."""
    routing = (ROUTER_FLOPS - FORWARD_BACKWARD_FLOPS) * router_params(cfg) * cfg.moe_layers
    return FORWARD_BACKWARD_FLOPS * count_active_params(cfg) + routing


def moe_shape(n_active: float, granularity: int, vocab_size: int = 32000, seq_len: int = 2048,
              tp_degrees: tuple[int, ...] = (1,), tie_embeddings: bool = False,
              rules: ShapeRules = STANDARD) -> tuple[ModelConfig, int]:
    """(the MoE shape for `n_active` active non-embedding parameters at `granularity`, the G it got): step 2 of the
    module docstring. The embeddings depend on the width, so the designer is run twice: once to learn d_model."""
    def dense(d_model: int) -> ModelConfig:
        embeddings = vocab_size * d_model * (1 if tie_embeddings else 2)
        return design_shape(n_active + embeddings, vocab_size=vocab_size, seq_len=seq_len, tp_degrees=tp_degrees,
                            tie_embeddings=tie_embeddings, pp_degrees=(1,), rules=rules)

    cfg = dense(dense(round((n_active / 12) ** (1 / 3) * 4)).d_model)  # d = 64·n, 12·d²·n = N: d = 4·(N/12)^(1/3)
    gran = granularity
    while cfg.d_ff % gran:
        gran //= 2
    moe = MoEConfig(experts=EXPANSION_RATE * gran, top_k=gran, expert_d_ff=cfg.d_ff // gran)
    out = dataclasses.replace(cfg, moe=moe)
    out.validate()
    return out, gran


def plan_moe(flops: float, vocab_size: int = 32000, seq_len: int = 2048, tp_degrees: tuple[int, ...] = (1, 2, 4, 8),
             tie_embeddings: bool = False, shapes: ShapeRules = STANDARD) -> MoESpec:
    """Plan a compute-optimal MoE run for `flops` training FLOPs, and the dense one beside it (module docstring).
    tp_degrees shape only the dense alternative (AutoEP takes no tensor parallelism). Raises ConfigError."""
    opt = compute_optimal_moe(flops)
    cfg, gran = moe_shape(opt.n_active, opt.granularity, vocab_size, seq_len, (1,), tie_embeddings, shapes)
    dense = plan(flops, vocab_size=vocab_size, seq_len=seq_len, tp_degrees=tp_degrees, tie_embeddings=tie_embeddings,
                 shapes=shapes)
    return spec_for_moe_shape(flops, cfg, gran, opt, dense)


def spec_for_moe_shape(flops: float, cfg: ModelConfig, gran: int, opt: MoEOptimum, dense: Spec,
                       n_tokens: int | None = None) -> MoESpec:
    """The spec of training the MoE shape `cfg` on `flops` (D = C / its budget FLOPs per token, or `n_tokens`)."""
    per_token = budget_flops_per_token(cfg)
    d = int(flops // per_token) if n_tokens is None else n_tokens
    if d < cfg.seq_len:
        raise ConfigError(f"budget C={flops:.3g} buys only {d} tokens for this MoE model: less than one sequence of "
                          f"{cfg.seq_len}; raise the budget")
    n_total_nonemb = count_params(cfg, include_embeddings=False)
    gbs, lr = _batch_and_lr(flops, cfg.seq_len)
    gbs = min(gbs, max(1, 2 ** int(math.log2(d // cfg.seq_len))))
    steps = -(-d // (gbs * cfg.seq_len))
    note = None if gran == opt.granularity else (f"the law's G={opt.granularity} does not divide d_ff={cfg.d_ff}; "
                                                 f"G={gran} taken")
    return MoESpec(flops=float(flops), law=KRAJEWSKI_2024_MOE.name, optimum=opt, model=cfg, granularity=gran,
                   n_params=count_params(cfg), n_params_active=count_active_params(cfg), n_tokens=d,
                   flops_per_token=per_token, flops_per_token_palm=flops_per_token(cfg, "palm"),
                   predicted_loss=KRAJEWSKI_2024_MOE.loss(n_total_nonemb, d, gran),
                   loss_warning=_extrapolated(n_total_nonemb, d), dense=dense,
                   dense_loss_same_data=KRAJEWSKI_2024_DENSE.loss(dense.n_params_non_embedding, dense.n_tokens),
                   global_batch_size=gbs, lr=lr, total_steps=steps, warmup_steps=max(1, round(WARMUP_FRACTION * steps)),
                   note=note)


def plan_moe_for_hours(hours: float, accelerator: str, mfu: float, peak: float | None = None, **kwargs) -> MoESpec:
    """The MoE plan whose PaLM-counted FLOPs take `hours` device-hours at `mfu`, as llm/scaling/plan.py
    `plan_for_hours` does: the budget count differs from PaLM's, so the budget is iterated; the designer's shapes
    step, so the iteration may cycle between two, and the last shape's D is then set from the hours directly."""
    palm_budget = flops_from_hours(hours, accelerator, mfu, peak=peak)
    budget = palm_budget
    for _ in range(8):
        spec = plan_moe(budget, **kwargs)
        nxt = palm_budget * spec.flops_per_token / spec.flops_per_token_palm
        if abs(nxt / budget - 1) < 1e-9:
            break
        budget = nxt
    d = int(palm_budget // spec.flops_per_token_palm)
    return spec_for_moe_shape(d * spec.flops_per_token, spec.model, spec.granularity, spec.optimum, spec.dense, d)


def _extrapolated(n_params: float, n_tokens: float) -> str | None:
    (n_lo, n_hi), (d_lo, d_hi) = FIT_RANGE
    out = [f"{name} = {abbreviate(x)} is outside the fitted {abbreviate(a)}-{abbreviate(b)}"
           for name, x, a, b in (("N", n_params, n_lo, n_hi), ("D", n_tokens, d_lo, d_hi)) if not a <= x <= b]
    return "extrapolated: " + "; ".join(out) if out else None


def format_moe_table(spec: MoESpec) -> str:
    """The MoE plan and its dense alternative, as `launch/plan.py --moe` prints them."""
    m, moe, dense = spec.model, spec.model.moe, spec.dense
    rows = [
        ("budget C", f"{spec.flops:.3e} FLOPs"),
        ("law", f"{spec.law}, expansion rate E={EXPANSION_RATE}"),
        ("law's optimum", f"G={spec.optimum.granularity}, {abbreviate(spec.optimum.n_active)} active / "
                          f"{abbreviate(spec.optimum.n_total)} total non-embedding, "
                          f"D={abbreviate(spec.optimum.n_tokens)}"),
        ("shape", f"n_layers={m.n_layers} d_model={m.d_model} n_heads={m.n_heads} n_kv_heads={m.n_kv_heads} "
                  f"head_dim={m.head_dim} vocab_size={m.vocab_size} seq_len={m.seq_len}"
                  + (" tied" if m.tie_embeddings else "")),
        ("experts", f"{moe.experts} per layer of width {moe.expert_d_ff}, top_k={moe.top_k} (G={spec.granularity}), "
                    f"every layer" + (f"; {spec.note}" if spec.note else "")),
        ("N", f"{spec.n_params:,} total, {spec.n_params_active:,} active (embeddings included)"),
        ("D", f"{spec.n_tokens:,} tokens ({abbreviate(spec.n_tokens)}), "
              f"{spec.n_tokens / spec.n_params_active:.1f} per active parameter"),
        ("FLOPs/token", f"budget {spec.flops_per_token:.3e} (6 N_active + routing); PaLM App. B "
                        f"{spec.flops_per_token_palm:.3e}"),
        ("predicted loss", f"{spec.predicted_loss:.3f} nats/token (Krajewski et al.'s MoE fit, C4)"),
        *([("  WARNING", f"predicted loss {spec.loss_warning}")] if spec.loss_warning else []),
        ("batch", f"{spec.global_batch_size} x {m.seq_len} tokens, peak LR {spec.lr:.3g} (DeepSeek 2024 rule)"),
        ("steps", f"{spec.total_steps:,} ({spec.warmup_steps:,} warmup)"),
        ("dense alternative", f"{abbreviate(dense.n_params)} parameters (n_layers={dense.model.n_layers} "
                              f"d_model={dense.model.d_model}), D={abbreviate(dense.n_tokens)} ({dense.law})"),
        ("  its loss", f"{dense.predicted_loss:.3f} ({dense.loss_law}, MassiveText); like for like with the MoE: "
                       f"{spec.dense_loss_same_data:.3f} (Krajewski et al.'s dense fit, C4)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
