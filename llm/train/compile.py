"""`train.compile`: torch.compile of a model one transformer block at a time.

Per block, as torchtitan does (its order is TP → activation checkpointing → compile → FSDP), rather than the
whole model: a block's graph is the same whatever the layout, so tensor-parallel twins, pipeline stages (which
hold a run of blocks) and checkpointed blocks each compile their own forward, and nothing else of the model
changes. Only the training/evaluation call `block(x)` goes through the compiled graph; a call with a KV cache
(`generate()`) runs the block eagerly, since its in-place cache writes and moving `start_pos` would recompile at
every decoding position.

In debug mode (`compile_model`) the fused LM head + loss is compiled too, one row chunk at a time
(llm/chunked_loss.py `chunk_loss_and_grads`): inductor fuses the log-softmax, exp and masking passes over each
chunk's logits into one. The head's forward + backward alone (2,048 rows, d_model 256, interleaved, load 12-14):
1.03-1.28x faster at vocab 4,096, 1.03-1.05x at 32,768. Whole-model compile of `compute_loss` (one graph, no
breaks, also under fullgraph=True) measured within noise of this (0.94-1.11x, bench_step.py --compile-variants,
load 11-13), so the per-block form, which every layout shares, is kept.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from llm.chunked_loss import chunk_loss_and_grads
from llm.model import Transformer


def compile_blocks(blocks: Iterable[nn.Module]) -> int:
    """Replace, in place, each block's forward(x, cache=None, start_pos=0) by a compiled one for cache-free calls.

    Apply after tensor parallelism and activation checkpointing (which override the forward on the instance
    too): the compiled graph is then the sharded, recomputed forward. Parameter names and state dicts are
    unchanged. Returns the number of blocks compiled.
    """
    n = 0
    for block in blocks:
        plain = block.forward
        compiled = torch.compile(plain)

        def forward(x, cache=None, start_pos=0, positions=None, doc_ids=None, _plain=plain, _compiled=compiled):
            if cache is None:
                return _compiled(x, None, 0, positions, doc_ids)
            return _plain(x, cache, start_pos)

        block.forward = forward
        n += 1
    return n


def compile_model(model: Transformer) -> None:
    """Debug mode's `train.compile`: every block (`compile_blocks`) and the chunked head + loss step, in place."""
    compile_blocks(model.layers)
    model.loss_chunk_step = torch.compile(chunk_loss_and_grads)
