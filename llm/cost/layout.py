"""A parallel layout of a run as plain numbers, the rules DeepSpeed and our layers impose on it, and how a
pipeline splits the model into stages.

The rules are those `parallel/topology.py` `check_layout` and `ParallelConfig.validate` enforce, restated here
without torch so that the planner can enumerate layouts before anything is launched; tests/llm/cost/test_layout.py
checks every layout the planner emits against the real `check_layout` and `deepspeed_config`.
No torch here.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from llm.config import ModelConfig
from llm.config.parallel import context_layout_errors, expert_layout_errors
from llm.shape import layer_params


@dataclass(frozen=True)
class Layout:
    """Degrees and memory-saving choices of one run (the planner's unit of choice)."""

    tp: int
    pp: int
    dp: int
    zero_stage: int
    micro_batch_size: int
    """Sequences per rank per forward pass (train.micro_batch_size)."""
    recompute_every_k: int = 0
    """Activation recomputation as one number: 0 none, 1 every block ('full'), k every k-th block ('every_k' with
    parallel.recompute_every_k=k); ParallelConfig.recompute_interval gives it for a run config."""
    sequence_parallel: bool = False
    offload_optimizer: bool = False
    ep: int = 1
    """Expert-parallel degree (parallel.expert): each MoE layer's routed experts split over ep of the dp ranks."""
    context: int = 1
    """Context-parallel degree (parallel.context, DeepSpeed Ulysses): each sequence split over this many ranks. The
    world is tp × pp × context × dp; dp counts only the ranks that take different samples."""
    tiled_mlp: int = 0
    """parallel.tiled_mlp: dense MLPs run over this many sequence slices, keeping none of their activations (0: off)."""

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.context * self.dp

    @property
    def zero_dp(self) -> int:
        """Ranks ZeRO partitions over: the data × context ranks (DeepSpeed's seq_data_parallel group), which hold
        the same parameters."""
        return self.dp * self.context

    @property
    def activation_checkpointing(self) -> str:
        return {0: "none", 1: "full"}.get(self.recompute_every_k, "every_k")

    def describe(self) -> str:
        ac = self.activation_checkpointing + (f"(k={self.recompute_every_k})" if self.recompute_every_k > 1 else "")
        return (f"tp={self.tp} pp={self.pp} " + (f"cp={self.context} " if self.context > 1 else "")
                + f"dp={self.dp} zero={self.zero_stage} micro={self.micro_batch_size} "
                f"ckpt={ac}" + (" sp" if self.sequence_parallel else "")
                + (" offload" if self.offload_optimizer else "") + (f" ep={self.ep}" if self.ep > 1 else "")
                + (f" tiled_mlp={self.tiled_mlp}" if self.tiled_mlp else ""))

    def parallel_dict(self) -> dict:
        """The `parallel` section of a run config (llm.config.ParallelConfig) for this layout."""
        out = {"tensor": self.tp, "pipeline": self.pp, "zero_stage": self.zero_stage,
               "activation_checkpointing": self.activation_checkpointing}
        if self.recompute_every_k > 1:
            out["recompute_every_k"] = self.recompute_every_k
        if self.sequence_parallel:
            out["sequence_parallel"] = True
        if self.offload_optimizer:
            out["offload_optimizer"] = True
        if self.ep > 1:
            out["expert"] = self.ep
        if self.tiled_mlp:
            out["tiled_mlp"] = self.tiled_mlp
        if self.context > 1:
            out["context"] = self.context
        return out

    def as_dict(self) -> dict:
        out = {**asdict(self), "activation_checkpointing": self.activation_checkpointing}
        for key in ("ep", "context"):  # a plan without them: its JSON as it was
            if out[key] == 1:
                del out[key]
        return out


def layout_errors(cfg: ModelConfig, layout: Layout, global_batch_size: int) -> list[str]:
    """Every rule `layout` breaks for a model `cfg` trained with `global_batch_size` sequences per step (empty
    when it is one DeepSpeed and our layers accept), in check_layout's wording."""
    t, p, errors = layout.tp, layout.pp, []
    for key in ("n_heads", "n_kv_heads", "vocab_size", "d_ff"):  # heads split whole; vocab and d_ff evenly
        if getattr(cfg, key) % t:
            errors.append(f"parallel.tensor={t} does not divide model.{key}={getattr(cfg, key)}")
    local, c = cfg.seq_len // layout.context, layout.context  # SP splits a rank's slice of the sequence
    if layout.sequence_parallel and local % t:
        errors.append(f"parallel.tensor={t} does not divide model.seq_len={cfg.seq_len}"
                      + (f" / parallel.context={c} = {local}" if c > 1 else ""))
    if cfg.n_layers < p:
        errors.append(f"model.n_layers={cfg.n_layers} is fewer than parallel.pipeline={p} stages")
    if layout.zero_stage >= 2 and p > 1:
        errors.append(f"zero_stage={layout.zero_stage} with pipeline={p}: DeepSpeed's pipeline engine supports "
                      "ZeRO stage 0 or 1 only")
    if layout.offload_optimizer and layout.zero_stage == 0:
        errors.append("offload_optimizer needs zero_stage >= 1")
    errors += _expert_errors(cfg, layout)
    errors += context_layout_errors(cfg, layout.context, t, p)
    if global_batch_size % (layout.micro_batch_size * layout.dp):
        errors.append(f"train.global_batch_size={global_batch_size} is not a multiple of "
                      f"train.micro_batch_size={layout.micro_batch_size} × data-parallel degree {layout.dp}")
    return errors


def _expert_errors(cfg: ModelConfig, layout: Layout) -> list[str]:
    return expert_layout_errors(cfg.moe, layout.ep, layout.dp, layout.tp, layout.pp, layout.zero_stage)


def partition_balanced(weights: list[int], num_parts: int) -> list[int]:
    """DeepSpeed 0.19.8's `runtime/utils.py partition_balanced`, ported: the boundaries (num_parts + 1 indices)
    of the split of `weights` into contiguous parts that minimises the spread (max − min) of the part sums,
    ties broken towards later cuts. PipelineModule's default 'parameters' method splits its layers with it."""
    n, m = len(weights), num_parts
    if n <= m:
        return [min(i, n) for i in range(m + 1)]
    inf = float("inf")
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    best_max = [[inf] * (m + 1) for _ in range(n + 1)]
    best_min = [[inf] * (m + 1) for _ in range(n + 1)]
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    position = [[0] * (m + 1) for _ in range(n + 1)]
    best_max[0][0], cost[0][0] = 0, 0
    for i in range(1, n + 1):
        for j in range(1, min(i, m) + 1):
            for k in range(i):
                hi = max(best_max[k][j - 1], prefix[i] - prefix[k])
                lo = min(best_min[k][j - 1], prefix[i] - prefix[k])
                if cost[i][j] >= hi - lo:
                    cost[i][j], best_max[i][j], best_min[i][j], position[i][j] = hi - lo, hi, lo, k
    parts = [n]
    for j in range(m, 0, -1):
        parts.append(position[parts[-1]][j])
    return parts[::-1]


def pipeline_stages(cfg: ModelConfig, pp: int) -> tuple[tuple[str, ...], ...]:
    """The layers of each pipeline stage, as kinds: 'embedding', 'block', 'norm', 'head' (parallel/pipeline.py
    `layer_specs` order), split by full-model parameter counts as DeepSpeed's 'parameters' method does."""
    return _stages(cfg.n_layers, cfg.vocab_size * cfg.d_model, layer_params(cfg), cfg.d_model, pp)


@functools.lru_cache(maxsize=256)
def _stages(n_layers: int, embedding: int, block: int, norm: int, pp: int) -> tuple[tuple[str, ...], ...]:
    kinds = ["embedding"] + ["block"] * n_layers + ["norm", "head"]
    bounds = partition_balanced([embedding] + [block] * n_layers + [norm, embedding], pp) if pp > 1 \
        else [0, len(kinds)]
    return tuple(tuple(kinds[bounds[i]:bounds[i + 1]]) for i in range(pp))
