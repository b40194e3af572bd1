"""Peak memory of the training loss's LM head + cross-entropy: full logits vs fused over row chunks, per rank.

    python bench/bench_head_loss_memory.py [--batch 8] [--seq 1024] [--d-model 256] [--vocab 32768]

Each variant runs one loss forward + backward in fresh processes (spawned; gloo ranks on CPU) and reports each
rank's peak RSS growth over it (`ru_maxrss` after minus before; inputs and weights are allocated before):

    tp2-full        tensor parallelism, 2 ranks, before: this rank's (tokens, vocab/2) logits slice, then
                    `vocab_parallel_cross_entropy` (parallel/vocab_parallel_loss.py)
    tp2-chunked     `vocab_parallel_linear_cross_entropy`, what `Transformer.head_loss` is under TP
    pp-last-full    the pipeline's last stage before: LMHeadPipe's logits, then the plain cross-entropy
    pp-last-chunked the last stage now: LMHeadPipe's (activations, weight) through `pipeline_loss_fn`
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"tp2-full": 2, "tp2-chunked": 2, "pp-last-full": 1, "pp-last-chunked": 1}
"""Variant name → processes (ranks)."""


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _loss_fn(variant: str, args, group):
    """(inputs, loss closure) of a variant on this rank, inputs allocated."""
    import torch.nn.functional as F
    from llm.config import ModelConfig
    from llm.model import cross_entropy_loss
    from parallel.pipeline import LMHeadPipe, pipeline_loss_fn
    from parallel.tp_mappings import enter_tensor_parallel_region, group_size
    from parallel.vocab_parallel_loss import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.seq, args.d_model, generator=gen, requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    if variant.startswith("tp"):
        w = (torch.randn(args.vocab // group_size(group), args.d_model, generator=gen) * 0.02).requires_grad_()
        if variant == "tp2-full":
            return lambda: vocab_parallel_cross_entropy(F.linear(enter_tensor_parallel_region(x, group, False), w),
                                                        targets, group)
        return lambda: vocab_parallel_linear_cross_entropy(x, w, targets, group)
    cfg = ModelConfig(n_layers=1, d_model=args.d_model, n_heads=4, n_kv_heads=4, d_ff=4 * args.d_model,
                      vocab_size=args.vocab, seq_len=args.seq)
    head = LMHeadPipe(cfg)
    if variant == "pp-last-full":
        return lambda: cross_entropy_loss(head.lm_head(x), targets)
    return lambda: pipeline_loss_fn()(head(x), targets)


def _rank(rank: int, world: int, port: int, variant: str, args, results) -> None:
    torch.set_num_threads(1)
    group = None
    if world > 1:
        import torch.distributed as dist
        store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0, timeout=timedelta(seconds=120))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
        group = dist.group.WORLD
    loss = _loss_fn(variant, args, group)
    before = _rss_mib()
    loss().backward()
    results.put((rank, _rss_mib() - before))


def measure(variant: str, args) -> list[float]:
    """Peak RSS growth (MiB) of each rank of a fresh run of `variant`."""
    from tests.parallel.launcher_utils import free_port
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    world = VARIANTS[variant]
    mp.start_processes(_rank, args=(world, free_port(), variant, args, results), nprocs=world, start_method="spawn")
    out = dict(results.get() for _ in range(world))
    return [out[r] for r in range(world)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tokens = args.batch * args.seq
    print(f"{tokens} tokens ({args.batch} × {args.seq}), d_model {args.d_model}, vocab {args.vocab}, fp32")
    for variant in args.variants:
        mib = measure(variant, args)
        print(f"{variant:16s} peak RSS growth per rank: " + ", ".join(f"{m:.0f} MiB" for m in mib))


if __name__ == "__main__":
    main()
