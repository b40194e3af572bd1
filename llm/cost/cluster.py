"""A run on a cluster: the chosen layout of a model and batch on N GPUs, with its memory, time and cost.

Throughput and MFU come from the predicted step time (llm/cost/step_time.py); wall-clock time is the steps of
the run times that; GPU-hours are wall-clock × GPUs; cost is GPU-hours × the price given. MFU here is PaLM's
(llm/cost/flops.py), the count the achievable-MFU table is quoted in, so hours and MFU agree.
No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm.config import ModelConfig
from llm.cost.flops import datasheet_peak_flops, flops_per_token
from llm.cost.layout_search import Candidate, choose_layout, rank_layouts
from llm.cost.longest_seq import check_contexts
from typed_yaml import ConfigError

GPU_MEMORY_GB = {
    # HBM per accelerator, from the vendors' datasheets (NVIDIA H100/H200/A100, AMD MI300X, Google Cloud TPU).
    "h100": 80, "h100-sxm": 80, "h100-pcie": 80, "h200": 141, "a100": 80, "a100-80gb": 80, "a100-40gb": 40,
"mi300x": 192, "tpu-v4": 32, "tpu-v5e": 16, "tpu-v5p": 95,
}


def gpu_memory_bytes(gpu: str, override_gb: float | None = None) -> float:
    """Memory of one GPU in bytes: `override_gb` GiB when given, else the datasheet's (ValueError if unknown).
    Datasheet "80 GB" HBM is 80 GiB as the driver reports it (85.9e9 bytes); we count it as 80e9, a margin."""
    if override_gb is not None:
        return override_gb * 1e9
    key = gpu.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in GPU_MEMORY_GB:
        raise ConfigError(f"no memory size listed for {gpu!r} (listed: {', '.join(sorted(GPU_MEMORY_GB))}); "
                         "pass --gpu-memory GB")
    return GPU_MEMORY_GB[key] * 1e9


@dataclass(frozen=True)
class ClusterPlan:
    gpus: int
    gpu: str
    chosen: Candidate
    tokens_per_s: float
    mfu: float
    total_steps: int
    wall_clock_h: float
    gpu_hours: float
    cost: float | None
    ranked: tuple[Candidate, ...]

    def to_json(self) -> dict:
        c = self.chosen
        return {"gpus": self.gpus, "gpu": self.gpu, "layout": c.layout.as_dict(),
                "memory_per_gpu": c.memory.as_dict(), "step_time_s": c.time.total_s,
                "step_time": c.time.as_dict(), "tokens_per_s": self.tokens_per_s, "mfu": self.mfu,
                "total_steps": self.total_steps, "wall_clock_h": self.wall_clock_h,
                "wall_clock_days": self.wall_clock_h / 24, "gpu_hours": self.gpu_hours, "cost": self.cost}


def plan_cluster(cfg: ModelConfig, n_tokens: int, global_batch_size: int, gpus: int, gpu: str,
                 gpus_per_node: int = 8, gpu_memory_gb: float | None = None, price_per_gpu_hour: float | None = None,
                 mfu: float | None = None, contexts: tuple[int, ...] | None = None) -> ClusterPlan:
    """Choose the layout for training `cfg` on `n_tokens` tokens in steps of `global_batch_size` sequences on
    `gpus` GPUs of kind `gpu`, and predict its time and cost. contexts: the context-parallel degrees to consider
    (default: every one the rules allow). Raises ConfigError (one line) when nothing fits or a degree in contexts
    breaks a rule."""
    memory = gpu_memory_bytes(gpu, gpu_memory_gb)
    if contexts:
        check_contexts(cfg, contexts, gpus)
    ranked = rank_layouts(cfg, gpus, global_batch_size, gpu, memory, gpus_per_node, mfu, contexts)
    if not ranked or ranked[0].rejected is not None:
        choose_layout(cfg, gpus, global_batch_size, gpu, memory, gpus_per_node, mfu, contexts)  # raises, saying why
    chosen = ranked[0]
    tokens_per_step = global_batch_size * cfg.seq_len
    steps = -(-n_tokens // tokens_per_step)
    tokens_per_s = tokens_per_step / chosen.time.total_s
    achieved = tokens_per_s * flops_per_token(cfg, "palm") / (datasheet_peak_flops(gpu, "bf16") * gpus)
    wall_h = steps * chosen.time.total_s / 3600
    hours = wall_h * gpus
    cost = None if price_per_gpu_hour is None else hours * price_per_gpu_hour
    return ClusterPlan(gpus, gpu, chosen, tokens_per_s, achieved, steps, wall_h, hours, cost, tuple(ranked))


def format_cluster(plan: ClusterPlan, explain: bool = False, top: int = 10) -> str:
    """The chosen layout, its itemised memory and time, and (explain) the ranked candidates with reasons."""
    c, gb = plan.chosen, 1e9
    m, t = c.memory, c.time
    rows = [
        ("cluster", f"{plan.gpus} x {plan.gpu}"),
        ("layout", c.layout.describe()),
        ("memory per GPU", f"{m.total / gb:.1f} GB = params {m.params / gb:.1f} + grads {m.grads / gb:.1f} + "
                           f"optimizer {m.optimizer / gb:.1f} + "
                           + (f"experts {m.experts / gb:.1f} (weights, grads, optimizer) + " if m.experts else "")
                           + f"buckets {m.buckets / gb:.1f} "
                           f"({m.buckets_filled / gb:.1f} filled) + activations "
                           f"{m.activations / gb:.1f} + logits {m.logits_and_loss / gb:.1f} + "
                           + (f"document mask {m.document_mask / gb:.1f} + " if m.document_mask else "")
                           + "allowance "
                           f"{m.allowance / gb:.1f} (stage {m.stage})"),
        ("step time", f"{t.total_s:.3g} s = compute {t.compute_s:.3g} (bubble {t.bubble_fraction:.1%}) + TP "
                      f"{t.tp_comm_s:.3g} + PP {t.pp_comm_s:.3g} + DP {t.dp_comm_s:.3g} + offload {t.offload_s:.3g}"
                      + (f" + EP all-to-all {t.ep_comm_s:.3g}" if t.ep_comm_s else "")
                      + (f" + CP all-to-all {t.cp_comm_s:.3g}" if t.cp_comm_s else "")),
        ("throughput", f"{plan.tokens_per_s:,.0f} tokens/s, MFU {plan.mfu:.1%} (PaLM App. B FLOPs)"),
        ("wall clock", f"{plan.wall_clock_h:,.1f} h ({plan.wall_clock_h / 24:.2f} days), {plan.total_steps:,} steps"),
        ("GPU-hours", f"{plan.gpu_hours:,.0f}" + ("" if plan.cost is None else f", cost {plan.cost:,.0f}")),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    if explain:
        out.append("")
        out.append(f"{'#':>4}  {'layout':<52} {'GB/GPU':>7} {'step s':>8}  verdict")
        fits = [x for x in plan.ranked if x.rejected is None]
        too_big = [x for x in plan.ranked if x.rejected is not None and x.memory is not None]
        broken = [x for x in plan.ranked if x.memory is None]
        for i, cand in enumerate(fits[:top] + too_big[:top] + broken[:top // 2]):
            mem = f"{cand.memory.total / gb:7.1f}" if cand.memory else f"{'-':>7}"
            sec = f"{cand.time.total_s:8.3g}" if cand.time else f"{'-':>8}"
            verdict = "chosen" if cand is c else (f"rejected: {cand.rejected}" if cand.rejected else "fits, slower")
            out.append(f"{i + 1:>4}  {cand.layout.describe():<52} {mem} {sec}  {verdict}")
        out.append(f"      ({len(plan.ranked)} candidates: {len(fits)} fit, {len(too_big)} too large, {len(broken)} "
                   f"break a rule; the first {top} of each kind shown)")
    return "\n".join(out)
