"""Predicted peak bytes per GPU of a layout, itemised: model states, buckets, activations, logits, allowance.

The peak of a rank is taken at the end of the forward pass of the last micro-batch it holds in flight, during an
accumulation (so the gradients of the earlier micro-batches are held):

  * model states: the ZeRO paper's table (llm/cost/zero.py `paper_zero_bytes`, bf16 mixed precision, K = 12)
    for the parameters of this rank: its pipeline stage (DeepSpeed's 'parameters' split, llm/cost/layout.py)
    and its tensor-parallel shard (block matrices, embedding and lm_head split tp ways; norm gains replicated).
    ZeRO-1 holds full gradients while accumulating (2Ψ), as the paper says. With optimizer offload the fp32
    master weights and Adam's moments live in CPU memory (ZeRO-Offload, Ren et al. 2021, arXiv:2101.06840).
  * buckets: DeepSpeed's reduction bucket of `reduce_bucket_size` elements (default 5e8; 2 bytes each), allocated
    per backward pass at ZeRO 1-2 and once at ZeRO-3, whatever the model size (llm/cost/zero.py docstring).
    Gradients fill it from the start, so a rank whose Ψ gradients are fewer than the bucket writes only the
    first 2Ψ bytes of it (`buckets_filled`). A GPU's caching allocator reserves the whole bucket; a CPU rank
    maps its pages lazily (Linux commits a page on its first write), so its resident memory holds only the
    filled part: `MemoryPerGPU.resident` is the count without the rest.
    ZeRO-3 also gathers full parameters layer by layer: one layer plus the prefetch bucket we configure
    (parallel/ds_config.py: 5e7 elements), at most the whole stage.
  * activations: llm/cost/activations.py per block, per micro-batch in flight. Without a pipeline one micro-
    batch; 1F1B (Narayanan et al. 2021, arXiv:2104.04473 §2.2) keeps min(pp − i, m) on stage i, so the first
    stage holds up to pp. Each in-flight micro-batch also keeps the stage's received input and sent output
    (DeepSpeed's pipe buffers, e·h per token each; the last stage's output is the final hidden state). Checkpointed
    blocks keep their input only, and the backward pass recomputes one checkpointed unit at a time (a block
    without a pipeline; a segment of k blocks in DeepSpeed's pipeline). That recomputation comes after the
    loss's backward has freed its buffers, so the larger of the two transients counts, not their sum.
  * logits and loss: the fused LM head + loss of llm/chunked_loss.py (llm/cost/activations.py `loss_bytes`: one
    chunk of CHUNK_ROWS rows' logits, fp32, never the whole micro-batch's), on the last stage, for one micro-batch.
    Every training path is predicted chunked, the vocab-parallel head under TP (vocab/tp columns of the chunk) and
    the pipeline's last stage (which then sends on the final hidden state, not logits) included.
  * context parallelism (parallel.context = C, DeepSpeed Ulysses): a rank holds seq/C tokens of each of its
    micro-batch's samples, so every activation term (llm/cost/activations.py), the pipe buffers and the loss's
    rows count b·seq/C tokens. The C ranks of a sample hold the same parameters, and ZeRO partitions over the
    data × context ranks (DeepSpeed's seq_data_parallel group, `Layout.zero_dp`), so the model states, the
    gradient partition and the optimizer step divide by dp·C.
  * document mask (data.document_mask, `document_mask=True`): the (seq × seq) boolean attention mask of each
    micro-batch row (llm/cost/activations.py `document_mask_bytes`), once per micro-batch in flight, whole on
    every context rank; its own item, `document_mask`. The planner's layout search has no data config and leaves
    it out (launch/plan.py --longest-seq takes it from --config).
  * the optimizer step: a second peak, once the activations are freed, over the model states (with the
    gradients as held at the boundary: ZeRO-1 holds only its partition by then). ZeRO 1-3 convert the
    rank's gradient partition p to fp32 (4 bytes per element); torch's AdamW then allocates sqrt(v) for the
    update: 4 bytes per element with its foreach kernels (torch's default on GPUs), 8 with the single-tensor
    loop it uses on CPUs (sqrt(v) and its quotient by the bias correction, tensor by tensor). ZeRO-0 without a
    pipeline (FP16_UnfusedOptimizer) makes fp32 copies of all gradients (4Ψ); AdamW's temporaries are 4Ψ with
    foreach, else 12 bytes per element of the largest tensor (8 attributed as above, 4 measured on CPU and
    not attributed). A pipeline without ZeRO (BF16_Optimizer) was measured at 7 bytes per element besides
    AdamW's (its fp32 gradient copy, 4, attributed). The rank's peak is the larger of the two peaks;
    `MemoryPerGPU.optimizer_step` reports the second, over the model states as listed.
  * experts (model.moe): each rank holds E/ep of every MoE layer's routed experts (parallel.expert = ep; AutoEP,
    which refuses tensor and pipeline parallelism, so a MoE layout has tp = pp = 1). Their weights, gradients and
    optimizer states follow the same ZeRO table, sharded over the dp/ep ranks that hold the same experts
    (DeepSpeed's expert-data-parallel group), the rest of the model over all dp ranks; they are their own item,
    `experts`, and `params`, `grads` and `optimizer` count the rest (router and shared experts included). Their
    activations are llm/cost/activations.py's MoE block (top_k expert passes per token, the router's logits).
  * allowance: what the tensor count misses on a GPU: the CUDA context, NCCL's communicator buffers and
    cuBLAS workspaces (FRAMEWORK_BYTES), and the caching allocator's fragmentation (FRAGMENTATION of the
    tensors). Set both to 0 to compare with a tensor count (the CPU calibration does).
No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm.config import ModelConfig
from llm.cost.activations import (block_bytes_per_token, checkpointed_block_bytes_per_token, document_mask_bytes,
                                  embedding_bytes_per_token, loss_bytes)
from llm.cost.layout import Layout, pipeline_stages
from llm.shape import block_matmul_params, expert_params, layer_matmul_params
from llm.cost.zero import paper_zero_bytes

DEFAULT_REDUCE_BUCKET_SIZE = 500_000_000
"""DeepSpeed 0.19.8 zero_optimization.reduce_bucket_size default, in elements (runtime/zero/config.py)."""
ZERO3_PREFETCH_BUCKET_SIZE = 50_000_000
"""parallel/ds_config.py sets stage3_prefetch_bucket_size=5e7 elements."""
FRAMEWORK_BYTES = 2 * 1024 ** 3
"""CUDA context (~0.5 GB on H100 with torch 2.x), NCCL communicator buffers (4 MB per channel and peer by
default, NCCL_BUFFSIZE) and cuBLAS workspaces, rounded up: a stated allowance, not a measurement."""
FRAGMENTATION = 0.10
"""PyTorch's caching allocator reserves more than it allocates; 10% of the tensors is the margin we leave."""
PARAM_BYTES = 2  # bf16 weights, gradients and activations
FP32_GRAD_BYTES = 4
"""The fp32 copy of the gradients (or of the rank's partition) the optimizer step makes (module docstring)."""
BF16_OPTIMIZER_STEP_BYTES = 7
"""Per element, besides AdamW's temporaries, for DeepSpeed's BF16_Optimizer (pipelines without ZeRO); measured."""
ADAM_TEMP_BYTES = {True: 4, False: 8}
"""AdamW's temporaries per element: foreach kernels (GPU default) vs the single-tensor loop (CPU)."""
UNFUSED_LARGEST_TENSOR_BYTES = 12
"""ZeRO-0 with the single-tensor loop: per element of the largest tensor (8 attributed, 4 measured)."""


@dataclass(frozen=True)
class MemoryPerGPU:
    """Predicted peak bytes of the worst rank (the largest total over pipeline stages), by item."""

    params: int
    grads: int
    optimizer: int
    buckets: int
    gathered_params: int
    """ZeRO-3: full parameters gathered during the forward and backward passes."""
    activations: int
    """Blocks of all micro-batches in flight, pipe buffers and token ids; the recomputed unit's transient."""
    logits_and_loss: int
    allowance: int
    stage: int = 0
    """The pipeline stage this rank belongs to."""
    optimizer_step: int = 0
    """Transient bytes of the optimizer step (the second peak, without activations)."""
    buckets_filled: int = 0
    """The part of `buckets` this rank's gradients write (module docstring): at most 2 bytes per parameter."""
    experts: int = 0
    """Model states (weights, gradients, optimizer) of this rank's E/ep routed experts of each MoE layer, ZeRO-sharded
    over the dp/ep ranks of its expert-data-parallel group (module docstring); 0 for a dense model."""
    document_mask: int = 0
    """data.document_mask's (seq × seq) boolean masks of the micro-batches in flight; 0 without it."""

    @property
    def tensors(self) -> int:
        """What a tensor count (torch.cuda.max_memory_allocated, or the CPU probe's accounting) would show: the
        model states and buckets plus the larger of the forward-pass and the optimizer-step peaks."""
        return self.params + self.grads + self.optimizer + self.experts + self.buckets + max(
            self.gathered_params + self.activations + self.logits_and_loss + self.document_mask, self.optimizer_step)

    @property
    def total(self) -> int:
        return self.tensors + self.allowance

    @property
    def resident(self) -> int:
        """`tensors` without the bucket pages no gradient writes: what a CPU rank's resident memory holds of
        them (a GPU's allocator holds `tensors`)."""
        return self.tensors - (self.buckets - self.buckets_filled)

    def as_dict(self) -> dict:
        return {"params": self.params, "grads": self.grads, "optimizer": self.optimizer,
                **({"experts": self.experts} if self.experts else {}), "buckets": self.buckets,
                "gathered_params": self.gathered_params, "activations": self.activations,
                "logits_and_loss": self.logits_and_loss,
                **({"document_mask": self.document_mask} if self.document_mask else {}),
                "optimizer_step": self.optimizer_step, "allowance": self.allowance, "tensors": self.tensors,
                "total": self.total, "stage": self.stage, "buckets_filled": self.buckets_filled,
                "resident": self.resident}


def stage_params(cfg: ModelConfig, kinds: tuple[str, ...], tp: int) -> int:
    """Parameters one tensor-parallel rank of a stage made of `kinds` holds; for an MoE model (tp = pp = 1) all but
    the routed experts (`expert_params_per_rank`)."""
    per_kind = {"embedding": cfg.vocab_size * cfg.d_model // tp, "head": cfg.vocab_size * cfg.d_model // tp,
                "block": layer_matmul_params(cfg) // tp + 2 * cfg.d_model, "norm": cfg.d_model}
    total = sum(per_kind[k] for k in kinds if k != "block")
    if cfg.moe is None:
        total += kinds.count("block") * per_kind["block"]
    else:  # blocks differ; the layout rules keep an MoE model in one stage, so this is every block
        routed = cfg.moe.experts * expert_params(cfg)
        total += kinds.count("block") * 2 * cfg.d_model + sum(
            block_matmul_params(cfg, i) - (routed if cfg.is_moe_layer(i) else 0) for i in range(cfg.n_layers)) \
            * kinds.count("block") // cfg.n_layers
    if cfg.tie_embeddings and len(kinds) == cfg.n_layers + 3:  # one stage holds both ends: one tied matrix
        return total - per_kind["head"]
    return total


def expert_params_per_rank(cfg: ModelConfig, ep: int) -> int:
    """Routed-expert parameters one rank holds: E/ep experts of each MoE layer (0 for a dense model)."""
    if cfg.moe is None:
        return 0
    return cfg.moe_layers * (cfg.moe.experts // ep) * expert_params(cfg)


def _stage_activations(cfg: ModelConfig, layout: Layout, kinds: tuple[str, ...],
                       in_flight: int) -> tuple[float, float]:
    """Activation bytes of one stage at its peak (module docstring): (held by the micro-batches in flight,
    the recomputed unit's transient)."""
    t, sp, e = layout.tp, layout.sequence_parallel, PARAM_BYTES
    tokens = layout.micro_batch_size * cfg.seq_len // layout.context
    full = block_bytes_per_token(cfg, t, sp, e) * tokens
    kept = checkpointed_block_bytes_per_token(cfg, t, sp, e) * tokens
    tiled = 0.0
    if layout.tiled_mlp and cfg.moe is None:  # DeepSpeed's TiledMLP keeps no MLP activation; the backward holds one
        mlp = 4 * e * cfg.d_ff / t * tokens      # slice's at a time (activations.py's MLP term)
        full, tiled = full - mlp, mlp / layout.tiled_mlp
    k = layout.recompute_every_k
    n_blocks = kinds.count("block")
    if cfg.moe is not None:  # one stage (layout rules), blocks of two kinds: dense and MoE
        per_block = [block_bytes_per_token(cfg, t, sp, e, layer=i) * tokens for i in range(n_blocks)]
        recomputed = [k > 0 and i % k == 0 for i in range(n_blocks)]
        per_mb = sum(kept if r else b for b, r in zip(per_block, recomputed))
        transient = max((b for b, r in zip(per_block, recomputed) if r), default=0.0)
    elif k == 0:
        per_mb, transient = n_blocks * full, 0.0
    elif layout.pp == 1:  # parallel/parallelize.py recomputes blocks 0, k, 2k, ... one at a time
        n_ck = -(-n_blocks // k)
        per_mb, transient = n_ck * kept + (n_blocks - n_ck) * full, full
    else:  # DeepSpeed's pipeline checkpoints runs of k layers made only of blocks, each keeping its input
        per_mb, transient = 0.0, 0.0
        for start in range(0, len(kinds), k):
            segment = kinds[start:start + k]
            if all(kind == "block" for kind in segment):
                per_mb += kept
                transient = max(transient, len(segment) * full)
            else:
                per_mb += segment.count("block") * full
    transient += tiled
    if "embedding" in kinds:
        per_mb += embedding_bytes_per_token() * tokens
    if layout.pp > 1:  # the pipe buffers: the received input and the output sent on (the last: the final hidden
        per_mb += 2 * e * cfg.d_model * tokens / (t if sp else 1)  # state the fused head + loss reads)
    return in_flight * per_mb, transient


def _step_bytes(cfg: ModelConfig, layout: Layout, kinds: tuple[str, ...], psi: int, foreach_adam: bool) -> float:
    """Bytes the optimizer step allocates beyond the model states (module docstring)."""
    if layout.offload_optimizer:
        return 0.0
    adam = ADAM_TEMP_BYTES[foreach_adam]
    if layout.zero_stage >= 1:
        return (FP32_GRAD_BYTES + adam) * psi / layout.zero_dp
    if layout.pp > 1:
        return (BF16_OPTIMIZER_STEP_BYTES + adam) * psi
    if foreach_adam:
        return (FP32_GRAD_BYTES + adam) * psi
    matrices = [cfg.d_model * max(cfg.d_ff, cfg.n_heads * cfg.head_dim)]
    if "embedding" in kinds or "head" in kinds:
        matrices.append(cfg.vocab_size * cfg.d_model)
    return FP32_GRAD_BYTES * psi + UNFUSED_LARGEST_TENSOR_BYTES * max(matrices) / layout.tp


def memory_per_gpu(cfg: ModelConfig, layout: Layout, global_batch_size: int,
                   reduce_bucket_size: int = DEFAULT_REDUCE_BUCKET_SIZE, framework_bytes: int = FRAMEWORK_BYTES,
                   fragmentation: float = FRAGMENTATION, foreach_adam: bool = True,
                   document_mask: bool = False) -> MemoryPerGPU:
    """Predicted peak bytes per GPU of `cfg` trained in bf16 with AdamW under `layout` (module docstring): the
    worst pipeline stage's. global_batch_size (sequences per step) sets the micro-batches per step m.
    foreach_adam: torch's AdamW runs its foreach kernels (its default on GPUs; False on CPUs).
    document_mask: the run's data.document_mask (each micro-batch row's seq × seq boolean mask)."""
    m = max(1, global_batch_size // (layout.micro_batch_size * layout.dp))
    stages = pipeline_stages(cfg, layout.pp)
    worst = None
    for i, kinds in enumerate(stages):
        psi = stage_params(cfg, kinds, layout.tp)
        states = paper_zero_bytes(psi, layout.zero_dp, layout.zero_stage)
        optimizer = 0 if layout.offload_optimizer else states.optimizer
        psi_e, dp_e = expert_params_per_rank(cfg, layout.ep), layout.dp // layout.ep
        expert_states = paper_zero_bytes(psi_e, dp_e, layout.zero_stage)
        experts = expert_states.total - (expert_states.optimizer if layout.offload_optimizer else 0)
        buckets = PARAM_BYTES * reduce_bucket_size if layout.zero_stage >= 1 else 0
        filled = min(buckets, PARAM_BYTES * (psi + psi_e))  # the stage's gradients, all of them through the bucket
        gathered = 0
        if layout.zero_stage == 3:
            largest = max(stage_params(cfg, (k,), layout.tp) for k in set(kinds))
            gathered = PARAM_BYTES * min(psi, largest + ZERO3_PREFETCH_BUCKET_SIZE)
        in_flight = min(layout.pp - i, m) if layout.pp > 1 else 1
        held, transient = _stage_activations(cfg, layout, kinds, in_flight)
        tokens = layout.micro_batch_size * cfg.seq_len // layout.context
        logits = loss_bytes(cfg, tokens, layout.tp, PARAM_BYTES) if "head" in kinds else 0.0
        mask = in_flight * document_mask_bytes(cfg, layout.micro_batch_size) if document_mask else 0
        transient = max(0.0, transient - logits)  # recomputation follows the loss's backward (module docstring)
        activations = held + transient
        step = _step_bytes(cfg, layout, kinds, psi, foreach_adam)
        if psi_e and not layout.offload_optimizer:  # the experts' fp32 gradients and AdamW's temporaries, per shard
            expert_step = (FP32_GRAD_BYTES + ADAM_TEMP_BYTES[foreach_adam]) * psi_e / (dp_e if layout.zero_stage else 1)
            # DeepSpeed's ZeRO optimizers step one parameter group at a time (its fp32 gradient partition, AdamW,
            # freed before the next), and the experts are a group of their own (deepspeed/moe/utils.py): the larger
            # of the two counts, not their sum (measured: the sum over-predicts the MoE probe layouts by 16%).
            step = max(step, expert_step) if layout.zero_stage else step + expert_step
        if layout.zero_stage == 1:  # the boundary reduce-scatter has replaced the full gradients by a partition
            step -= states.grads - paper_zero_bytes(psi, layout.zero_dp, 2).grads
            step -= expert_states.grads - paper_zero_bytes(psi_e, dp_e, 2).grads
        tensors = states.params + states.grads + optimizer + experts + buckets + max(
            gathered + activations + logits + mask, step)
        mem = MemoryPerGPU(params=states.params, grads=states.grads, optimizer=optimizer, buckets=int(buckets),
                           gathered_params=gathered, activations=round(activations), logits_and_loss=round(logits),
                           allowance=round(framework_bytes + fragmentation * tensors), stage=i,
                           optimizer_step=round(step), buckets_filled=int(filled), experts=experts,
                           document_mask=mask)
        if worst is None or mem.total > worst.total:
            worst = mem
    return worst
