"""llm/model.py's Transformer as a DeepSpeed `PipelineModule` (the way back from its checkpoints is
parallel/pipeline_checkpoint.py).

The model becomes a flat list of layer specs, one nn.Module each, that DeepSpeed partitions over the
pipeline stages and drives with its 1F1B schedule (`engine.train_batch`); we write no pipeline engine:

    spec index   module          state-dict keys          full-model names (llm/model.py)
    0            EmbeddingPipe   tok_embeddings.weight    tok_embeddings.weight
    1 + i        BlockPipe(i)    attn_norm.weight, ...    layers.{i}.attn_norm.weight, ...
    L + 1        FinalNormPipe   norm.weight              norm.weight
    L + 2        LMHeadPipe      lm_head.weight           lm_head.weight
                 (tied: the stage-0 EmbeddingPipe again, through `TiedLayerSpec`; its weight is saved once,
                 in layer 0's file, and is lm_head.weight as well)

The last layer forms no logits: it hands the loss_fn the final-norm activations and its head weight, and the
loss_fn (`pipeline_loss_fn`) applies the head and the cross-entropy fused over row chunks (llm/chunked_loss.py;
vocab-parallel under TP, parallel/vocab_parallel_loss.py), so the last stage never holds the full
(micro-batch, seq, vocab) logits. The weight stays a parameter of the last stage (of its copy of the tied
embedding), so its gradient, and DeepSpeed's all-reduce of the tied one, are as before. Measured (peak RSS
growth of the last stage's head + loss forward and backward, fresh process, fp32, 8 × 1024 tokens, d_model 256,
vocab 32768; bench/bench_head_loss_memory.py): 3016 MiB with the logits (LMHeadPipe's, then the cross-entropy)
vs 276 MiB chunked. Under TP the last stage's loss is the vocab-parallel one, measured in
parallel/vocab_parallel_loss.py.

Each stage module's keys are its full-model names minus a prefix (`layer_prefix`, parallel/names.py), so
`init_parameters(module, cfg, seed, prefix)` gives every weight the value the single-process model gives it,
whichever stage builds it. DeepSpeed saves spec i of tensor-parallel rank r as
`layer_{i:02d}-model_{r:02d}-model_states.pt`; `load_pipeline_checkpoint` (parallel/pipeline_checkpoint.py) maps
those files back to one llm/model.py state dict (merging tensor-parallel shards). These indices and names are a
checkpoint format: keep them stable.

Activations cross stages as one contiguous (batch, seq, d_model) tensor (gloo's send refuses strided
ones; a sequence-parallel reduce-scatter leaves its output as a strided view), which is with sequence
parallelism this tensor-parallel rank's slice of the sequence. DeepSpeed then must not "partition" it over
the TP group (its pipe_partitioned/grad_partitioned assume every TP rank holds the same activation), which
`build_pipeline_module` checks.
"""
from __future__ import annotations

import functools
from functools import partial

import torch
from torch import nn

from llm.config import ModelConfig, RunConfig
from llm.chunked_loss import linear_cross_entropy
from llm.model import Block, RMSNorm, init_parameters

TIED_KEY = "embeddings"
"""TiedLayerSpec key of the embedding table shared by the first and last stage (model.tie_embeddings)."""


class TensorParallelPlan:
    """What a stage module needs to make itself tensor-parallel: the Topology and sequence parallelism."""

    def __init__(self, topo, sequence_parallel: bool = False):
        self.topo, self.sequence_parallel = topo, sequence_parallel

    @property
    def group(self):
        return self.topo.tp_group

    def __repr__(self) -> str:  # DeepSpeed prints the specs
        return f"TensorParallelPlan(tp={self.topo.tp}, sequence_parallel={self.sequence_parallel})"


def _setup(module: nn.Module, cfg: ModelConfig, seed: int, prefix: str, tp: TensorParallelPlan | None) -> None:
    """Init as the single-process model would, then shard for tensor parallelism.

    Skipped on the meta device, where DeepSpeed's 'parameters' partitioning only counts (see LlamaPipeline):
    the counts are then the full model's whatever the TP degree, so the partition does not depend on it.
    """
    if any(p.is_meta for p in module.parameters()):
        return
    init_parameters(module, cfg, seed, prefix=prefix)
    if tp is not None and tp.topo.tp > 1:
        from parallel.tensor import parallelize_modules
        parallelize_modules(module, tp.group, tp.sequence_parallel)


class EmbeddingPipe(nn.Module):
    """tokens (batch, seq) int64 → activations (batch, seq, d_model); sequence-split with sequence parallelism."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, tp: TensorParallelPlan | None = None):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        _setup(self, cfg, seed, "", tp)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings(tokens).contiguous()


class BlockPipe(Block):
    """llm/model.py's Block `index` (a subclass, so its state-dict keys are Block's) with the full model's init."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, index: int = 0, tp: TensorParallelPlan | None = None):
        super().__init__(cfg)
        self.index = index
        _setup(self, cfg, seed, f"layers.{index}.", tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).contiguous()


class FinalNormPipe(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0, tp: TensorParallelPlan | None = None):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        _setup(self, cfg, seed, "", tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x).contiguous()


class LMHeadPipe(nn.Module):
    """activations → (activations, lm_head.weight) for `pipeline_loss_fn`, which applies the head (this rank's
    vocabulary slice of it under TP); untied only."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, tp: TensorParallelPlan | None = None):
        super().__init__()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        _setup(self, cfg, seed, "", tp)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.Parameter]:
        return x, self.lm_head.weight


def tied_head_forward(embedding: EmbeddingPipe, x: torch.Tensor) -> tuple[torch.Tensor, nn.Parameter]:
    """The LM head of tied embeddings: (x, E) for `pipeline_loss_fn`, E the last stage's copy of the embedding
    table (under TP this rank's vocabulary slice of it), so logits = x · Eᵀ."""
    return x, embedding.tok_embeddings.weight


def layer_specs(cfg: RunConfig, topo=None) -> list:
    """The LayerSpecs of the model, in order (DeepSpeed builds each only on the stage that owns it).

    topo: the Topology, needed only when topo.tp > 1 (the stage modules then shard themselves).
    """
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    m, seed = cfg.model, cfg.train.seed
    tp = TensorParallelPlan(topo, cfg.parallel.sequence_parallel) if topo is not None and topo.tp > 1 else None
    if m.tie_embeddings:
        tie = dict(tied_weight_attr=["tok_embeddings.weight"], tp=tp)
        first = TiedLayerSpec(TIED_KEY, EmbeddingPipe, m, seed, **tie)
        last = TiedLayerSpec(TIED_KEY, EmbeddingPipe, m, seed, forward_fn=tied_head_forward, **tie)
    else:
        first = LayerSpec(EmbeddingPipe, m, seed, tp=tp)
        last = LayerSpec(LMHeadPipe, m, seed, tp=tp)
    blocks = [LayerSpec(BlockPipe, m, seed, i, tp=tp) for i in range(m.n_layers)]
    return [first, *blocks, LayerSpec(FinalNormPipe, m, seed, tp=tp), last]


def pipeline_loss_fn(topo=None, sequence_parallel: bool = False):
    """loss_fn((activations, head weight), targets) of the last stage: the mean cross-entropy of the head's logits,
    fused over row chunks (llm/chunked_loss.py), vocab-parallel when tp > 1 (activations sequence-split under
    sequence_parallel, as a ColumnParallelLinear head takes them)."""
    if topo is None or topo.tp == 1:
        return _head_loss
    return partial(_vocab_parallel_head_loss, group=topo.tp_group, sequence_parallel=sequence_parallel)


def _head_loss(outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    hidden, weight = outputs
    return linear_cross_entropy(hidden, weight, targets)


def _vocab_parallel_head_loss(outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor, group,
                              sequence_parallel: bool) -> torch.Tensor:
    from parallel.vocab_parallel_loss import vocab_parallel_linear_cross_entropy
    hidden, weight = outputs
    return vocab_parallel_linear_cross_entropy(hidden, weight, targets, group, sequence_parallel)


def layer_param_counts(specs) -> list[int]:
    """Trainable parameters of each spec, built on the meta device (no memory, no init; full-model counts)."""
    counts = []
    for spec in specs:
        with torch.device("meta"):
            module = spec.build()
        counts.append(sum(p.numel() for p in module.parameters() if p.requires_grad))
    return counts


@functools.cache
def _pipeline_module_class():
    from deepspeed.pipe import PipelineModule

    class LlamaPipeline(PipelineModule):
        """DeepSpeed's PipelineModule with two repairs (deepspeed 0.19.8, runtime/pipe/module.py).

        - 'parameters' partitioning builds every layer on every rank just to count its parameters
          (`_count_layer_params`); counting on the meta device gives the same numbers at no cost.
        - `_synchronize_tied_weights` broadcasts into the tied parameter with autograd recording, which torch
          warns about at every backward ("c10d::broadcast_: an autograd kernel was not registered"); the copy
          is not part of the model's function, so it runs under no_grad.
        """

        def _count_layer_params(self):
            return layer_param_counts(self._layer_specs)

        def _synchronize_tied_weights(self):
            with torch.no_grad():
                super()._synchronize_tied_weights()

    return LlamaPipeline


def build_pipeline_module(cfg: RunConfig, topo):
    """The model as a `deepspeed.pipe.PipelineModule` over `topo.ds_topology` (pipe × data × model axes).

    Partitioned by `cfg.parallel.pipeline_partition` ('parameters', 'uniform' or 'type:<regex>', e.g.
    'type:BlockPipe' to balance blocks only), with `cfg.parallel.recompute_interval` as DeepSpeed's
    activation_checkpoint_interval: the length of the checkpointed segments, so with k every run of k
    consecutive blocks keeps only its input and is recomputed in the backward pass (memory ~ n_layers/k
    boundary activations), the pipeline analogue of checkpointing every k-th block. Only runs made entirely of
    blocks are recomputed (torch's non-reentrant checkpoint), as in single-process mode; a segment that also
    holds the embedding, norm or head runs plainly. With `topo.tp > 1` every stage is tensor-parallel and the
    loss is the vocab-parallel cross-entropy; either way the last stage's loss never forms the full logits.
    Weights equal the single-process model's (per-name seeded init); tied embeddings are one `TiedLayerSpec`
    whose gradients DeepSpeed all-reduces between the first and last stage.
    """
    check_pipeline_transfers(cfg, topo)
    cls = _pipeline_module_class()
    # No seed_layers: init is seeded per parameter name already, and dropout draws from the torch RNG.
    # (seed_layers=True without a seed_fn would hand numpy ints to random.seed, a TypeError on Python 3.11.)
    loss_fn = pipeline_loss_fn(topo, cfg.parallel.sequence_parallel)
    module = cls(layers=layer_specs(cfg, topo), topology=topo.ds_topology, loss_fn=loss_fn,
                 partition_method=cfg.parallel.pipeline_partition,
                 activation_checkpoint_interval=cfg.parallel.recompute_interval,
                 activation_checkpoint_func=partial(torch.utils.checkpoint.checkpoint, use_reentrant=False),
                 checkpointable_layers=[BlockPipe.__name__])
    mark_grad_norm_owners(module, topo)
    return module


def check_pipeline_transfers(cfg: RunConfig, topo) -> None:
    """Refuse sequence parallelism under DeepSpeed's partitioned stage-to-stage transfers (silently wrong).

    With tp > 1 DeepSpeed's pipeline engine by default sends each TP rank 1/tp of the activation and
    all-gathers it over the TP group on arrival (config pipeline.pipe_partitioned / grad_partitioned), which
    is only right when every TP rank holds the same activation; under sequence parallelism each holds a
    different slice of the sequence (measured: losses off by ~1e-3 from the first step). Raises ConfigError.
    """
    if topo.tp == 1 or not cfg.parallel.sequence_parallel:
        return
    from llm.config import ConfigError
    from parallel.ds_config import deepspeed_config
    pipe = deepspeed_config(cfg, topo.dp).get("pipeline", {})
    if pipe.get("pipe_partitioned", True) or pipe.get("grad_partitioned", True):
        raise ConfigError("parallel.sequence_parallel=true with parallel.tensor > 1 and parallel.pipeline > 1 "
                          "needs DeepSpeed's pipeline.pipe_partitioned and pipeline.grad_partitioned off: set "
                          "parallel.deepspeed={pipeline: {pipe_partitioned: false, grad_partitioned: false}}")


def mark_grad_norm_owners(module, topo) -> None:
    """Mark the parameters so that the global gradient norm (for clipping) counts each exactly once.

    DeepSpeed 0.19.8's fp32 clipping (runtime/utils.py `clip_grad_norm_`, used without ZeRO) counts a gradient
    when `mpu.get_model_parallel_rank() == 0` or the parameter is model-parallel (`model_parallel` or
    `tensor_model_parallel` set). The pipeline grid's model-parallel group spans pipe × tensor, so only stage 0
    would count its replicated parameters: every later stage's gradients would be left out of the norm. And it
    ignores `ds_pipe_replicated`, so a TP-sharded tied embedding would be counted on both stages. Hence:
    TP shards stay marked on every rank (tensor.py marks them), replicated parameters are marked
    `model_parallel` on TP rank 0, and the non-owner copy of a tied weight (DeepSpeed marks it
    `ds_pipe_replicated`) is unmarked. Every other reader of these marks (ZeRO's norm, the fp16/bf16
    optimizers' norms) skips `ds_pipe_replicated` parameters first and reads the tensor rank, so it agrees.
    """
    tp_rank = topo.tp_rank if topo is not None else 0
    for p in module.parameters():
        if getattr(p, "ds_pipe_replicated", False):
            p.tensor_model_parallel = False
        elif not getattr(p, "tensor_model_parallel", False) and tp_rank == 0:
            p.model_parallel = True
