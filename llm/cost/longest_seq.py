"""The longest sequence a model trains at on a cluster: per layout, the largest seq_len whose predicted peak per GPU
(llm/cost/memory.py) fits the accelerator.

Each layout is tp × pp × C × dp of the world (tp within a node, with Megatron sequence parallelism when tp > 1; pp
dividing n_layers; C a context-parallel degree `context_layout_errors` allows), at micro-batch 1 with the pipeline
full (pp micro-batches per step), with activation checkpointing off or on every block (full recompute keeps only
each block's input, seq/C × d_model per layer), and the ZeRO stage that reaches furthest (the lowest on a tie).
The predicted peak grows with seq_len (every activation term does, and the loss's chunk until it is full), so a
binary search over multiples of SEQ_STEP (and of C, and of tp under sequence parallelism) finds the largest that
fits. Memory only: the step time at that length is llm/cost/step_time.py's. No torch here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from llm.config import ModelConfig
from llm.config.parallel import context_layout_errors
from llm.cost.layout import Layout, layout_errors
from llm.cost.memory import FRAGMENTATION, FRAMEWORK_BYTES, MemoryPerGPU, memory_per_gpu
from typed_yaml import ConfigError

SEQ_STEP = 128
"""Sequence lengths searched are multiples of this: attention kernels tile the sequence in blocks of 64 or 128."""
MAX_SEQ = 1 << 24
"""The search stops at 16M tokens: beyond the planner's model (one mask, one chunk) and anyone's data."""
RECOMPUTE = (0, 1)


@dataclass(frozen=True)
class LongestSeq:
    layout: Layout
    seq_len: int
    """The largest seq_len that fits; 0 when not even SEQ_STEP does."""
    memory: MemoryPerGPU | None
    """The predicted peak at seq_len (None when nothing fits)."""
    capped: bool = False
    """The search reached its cap (max_seq) with memory to spare: seq_len is a lower bound."""

    def as_dict(self) -> dict:
        return {"layout": self.layout.as_dict(), "seq_len": self.seq_len, "capped": self.capped,
                "memory_per_gpu": self.memory.as_dict() if self.memory else None}


def seq_step(layout: Layout) -> int:
    """The sequence lengths a layout accepts are multiples of this: SEQ_STEP, C (Ulysses' equal slices) and, under
    sequence parallelism, tp (of each slice)."""
    return math.lcm(SEQ_STEP, layout.context, layout.tp * layout.context if layout.sequence_parallel else 1)


def predict(cfg: ModelConfig, layout: Layout, seq_len: int, document_mask: bool = False,
            framework_bytes: int = FRAMEWORK_BYTES, fragmentation: float = FRAGMENTATION) -> MemoryPerGPU:
    """The predicted peak per GPU of `cfg` at `seq_len` under `layout`, micro-batch as given, pipeline full."""
    batch = layout.dp * layout.pp * layout.micro_batch_size  # pp micro-batches per step: 1F1B's worst stage is full
    return memory_per_gpu(dataclasses.replace(cfg, seq_len=seq_len), layout, batch, framework_bytes=framework_bytes,
                          fragmentation=fragmentation, document_mask=document_mask)


def longest_seq(cfg: ModelConfig, layout: Layout, gpu_memory_bytes: float, document_mask: bool = False,
                framework_bytes: int = FRAMEWORK_BYTES, fragmentation: float = FRAGMENTATION,
                max_seq: int = MAX_SEQ) -> LongestSeq:
    """The largest multiple of `seq_step(layout)` up to max_seq whose predicted peak fits gpu_memory_bytes."""
    step = seq_step(layout)

    def mem(k: int) -> MemoryPerGPU:
        return predict(cfg, layout, k * step, document_mask, framework_bytes, fragmentation)

    if mem(1).total > gpu_memory_bytes:
        return LongestSeq(layout, 0, None)
    lo, hi = 1, max_seq // step + 1  # mem(lo) fits; hi does not, or is past the cap
    probe = 2
    while probe < hi and mem(probe).total <= gpu_memory_bytes:  # doubling first: long searches stay ~2·log2 steps
        lo, probe = probe, probe * 2
    hi = min(hi, probe)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mem(mid).total <= gpu_memory_bytes else (lo, mid)
    return LongestSeq(layout, lo * step, mem(lo), capped=(lo + 1) * step > max_seq)


def check_contexts(cfg: ModelConfig, contexts: tuple[int, ...], world_size: int, seq_searched: bool = False) -> None:
    """Refuse, in one line with the rule, a --context degree that no layout of this model on world_size GPUs can
    take (the rules are `context_layout_errors`'s at tp = pp = 1; seq_searched: the sequence is what is searched,
    so it is not held against C)."""
    for c in contexts:
        if world_size % c:
            raise ConfigError(f"--context {c} does not divide the {world_size} GPUs (--gpus)")
        model = dataclasses.replace(cfg, seq_len=math.lcm(SEQ_STEP, c)) if seq_searched else cfg
        errors = context_layout_errors(model, c, 1, 1)
        if errors:
            raise ConfigError(f"--context {c}: {'; '.join(errors)}")


def longest_seq_table(cfg: ModelConfig, world_size: int, gpu_memory_bytes: float, gpus_per_node: int = 8,
                      contexts: tuple[int, ...] | None = None, document_mask: bool = False,
                      framework_bytes: int = FRAMEWORK_BYTES, fragmentation: float = FRAGMENTATION) -> list[LongestSeq]:
    """One row per (tp, pp, C, recompute) of the module docstring's grid (contexts: the C degrees to try, default
    all), with its furthest-reaching ZeRO stage; the longest first. Raises ConfigError (one line) for a --context
    degree no layout takes."""
    if contexts:
        check_contexts(cfg, contexts, world_size, seq_searched=True)
    rows = []
    for tp in (t for t in range(1, min(gpus_per_node, world_size) + 1) if world_size % t == 0):
        for pp in (p for p in range(1, world_size // tp + 1) if world_size % (tp * p) == 0):
            rest = world_size // (tp * pp)
            for c in (c for c in range(1, rest + 1) if rest % c == 0 and (not contexts or c in contexts)):
                for k in RECOMPUTE:
                    best = None
                    for zero in (0, 1) if pp > 1 else (0, 1, 2, 3):
                        lay = Layout(tp, pp, rest // c, zero, 1, k, tp > 1, context=c)
                        stepped = dataclasses.replace(cfg, seq_len=seq_step(lay))
                        if layout_errors(stepped, lay, lay.dp * pp) or cfg.n_layers % pp:
                            continue
                        row = longest_seq(cfg, lay, gpu_memory_bytes, document_mask, framework_bytes, fragmentation)
                        if best is None or row.seq_len > best.seq_len:
                            best = row
                    if best is not None:
                        rows.append(best)
    return sorted(rows, key=lambda r: (-r.seq_len, r.layout.tp, r.layout.pp, r.layout.context,
                                       r.layout.recompute_every_k))


def format_longest_seq(rows: list[LongestSeq], cluster: str, gpu_memory_bytes: float, document_mask: bool,
                       top: int | None = None) -> str:
    """The table launch/plan.py --longest-seq prints."""
    gb = 1e9
    out = [f"longest seq_len per layout on {cluster} ({gpu_memory_bytes / gb:.0f} GB per GPU; micro-batch 1"
           + (", document mask" if document_mask else "") + "):",
           f"{'tp':>3} {'pp':>3} {'cp':>3} {'dp':>4} {'zero':>4} {'recompute':>9} {'seq_len':>13} {'GB/GPU':>7} "
           f"{'activations':>11} {'loss':>6}" + (f" {'mask':>6}" if document_mask else "")]
    for r in rows[:top]:
        lay, m = r.layout, r.memory
        cells = [f"{lay.tp:>3} {lay.pp:>3} {lay.context:>3} {lay.dp:>4} {lay.zero_stage:>4} "
                 f"{lay.activation_checkpointing:>9} {('>=' if r.capped else '') + f'{r.seq_len:,}':>13}"]
        if m is None:
            cells.append(f" {'-':>7} {'-':>11} {'-':>6}  nothing fits" + (f" {'-':>6}" if document_mask else ""))
        else:
            cells.append(f" {m.total / gb:7.1f} {m.activations / gb:11.1f} {m.logits_and_loss / gb:6.1f}"
                         + (f" {m.document_mask / gb:6.1f}" if document_mask else ""))
        out.append("".join(cells))
    if any(r.capped for r in rows[:top]):
        out.append(f"(>=: the search stops at {MAX_SEQ:,} tokens with memory to spare)")
    if top is not None and len(rows) > top:
        out.append(f"({len(rows)} layouts; the first {top} shown: --explain or --json for all)")
    return "\n".join(out)
