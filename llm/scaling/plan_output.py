"""What a plan (llm/scaling/plan.py `Spec`) looks like to its user: the table `llm-forge plan` prints, and the
pretraining config `--write-config` writes, with the comment block that says how every number was chosen.
No torch here.
"""
from __future__ import annotations

import math
from typing import Any

from llm.config import config_from_dict
from llm.cost.cluster import ClusterPlan
from llm.cost.layout import Layout
from llm.scaling.plan import DEFAULT_DATA_PATH, DEFAULT_TOKENIZER, MIN_LR_RATIO, SHAPE_FIELDS, Spec, abbreviate
from llm.shape import SHAPE_RULES, STANDARD


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
        ("N_opt from the law", abbreviate(spec.n_params_target)),
        ("shape", f"n_layers={m.n_layers} d_model={m.d_model} n_heads={m.n_heads} n_kv_heads={m.n_kv_heads} "
                  f"head_dim={m.head_dim} d_ff={m.d_ff} vocab_size={m.vocab_size} seq_len={m.seq_len}"
                  + (" tied" if m.tie_embeddings else "")
                  + ("" if spec.shape_rules == STANDARD.name else f" ({spec.shape_rules} shape rules)")),
        ("N of the shape", f"{spec.n_params:,} total, {spec.n_params_non_embedding:,} non-embedding"),
        ("D = C / 6N", f"{spec.n_tokens:,} tokens ({abbreviate(spec.n_tokens)})"),
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
        "out_dir": out_dir or f"runs/pretrain_{abbreviate(spec.n_params)}",
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


def prediction_lines(cluster: ClusterPlan) -> list[str]:
    """The --write-config comment lines of a chosen layout (llm/cost/cluster.py): what was chosen, what it needs,
    how long it takes; config_header's `predictions`."""
    c, m, t = cluster.chosen, cluster.chosen.memory, cluster.chosen.time
    return [f"Layout chosen by launch/plan.py for {cluster.gpus} x {cluster.gpu} (llm/cost/layout_search.py): "
            f"{c.layout.describe()}.",
            f"  Predicted memory per GPU {m.total / 1e9:.1f} GB: params {m.params / 1e9:.1f}, "
            f"grads {m.grads / 1e9:.1f}, "
            f"optimizer {m.optimizer / 1e9:.1f}, buckets {m.buckets / 1e9:.1f} ({m.buckets_filled / 1e9:.1f} filled by "
            "gradients),",
            f"  activations {m.activations / 1e9:.1f}, logits {m.logits_and_loss / 1e9:.1f}, allowance "
            f"{m.allowance / 1e9:.1f} (llm/cost/memory.py).",
            f"  Predicted step {t.total_s:.3g} s, {cluster.tokens_per_s:,.0f} tokens/s, MFU {cluster.mfu:.1%}; "
            f"{cluster.wall_clock_h:,.1f} h wall clock, {cluster.gpu_hours:,.0f} GPU-hours"
            + ("" if cluster.cost is None else f", cost {cluster.cost:,.0f}") + "."]
