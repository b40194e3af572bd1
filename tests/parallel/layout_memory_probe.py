"""Measure the peak per-rank memory of training steps under several layouts in one launch, beside the planner's
prediction (llm/cost/memory.py).

    deepspeed --num_gpus W tests/parallel/layout_memory_probe.py OUT.json LAYOUT [LAYOUT ...]

LAYOUT is "size:tp:pp:zero:recompute_interval[:ep[:cp[:tiled]]]", size one of PROBE_MODELS, ep the expert-parallel
degree of the MoE model (default 1), cp the context-parallel degree (default 1; the 'ctx*' sizes take one sample per
micro-batch), tiled parallel.tiled_mlp (default 0). For each, on every
rank: build the engine through `DeepSpeedBackend` in bf16 (two micro-batches of 2 per step, reduction buckets of
BUCKET elements so the fixed 1 GB default does not hide the model), take one step (Adam's moments exist from
then on), then measure the next: the model-state bytes the engine holds before it (parallel/memory.py
`measure_zero_bytes`, the ZeRO probe's tensor accounting) plus the peak, over the step, of the bytes torch's CPU
allocator hands out beyond that (torch.profiler memory events: every allocation and free, in order). That is
what `torch.cuda.max_memory_allocated` reports on a GPU. Rank 0 writes every rank's rows to OUT.json.
"""
from __future__ import annotations

import argparse
import functools
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MICRO_BATCH = 2
MICRO_STEPS = 2
BUCKET = 100_000
PROBE_MODELS = {
    "small": dict(n_layers=2, d_model=128, n_heads=4, d_ff=384, vocab_size=1024, seq_len=32),
    "large": dict(n_layers=4, d_model=256, n_heads=8, n_kv_heads=4, d_ff=704, vocab_size=2048, seq_len=64),
    # 'small' at 16× the sequence length: activations and logits outweigh the model states and the step.
    "long": dict(n_layers=2, d_model=128, n_heads=4, d_ff=384, vocab_size=1024, seq_len=512),
    # 'large' as a mixture of experts at the same active width: 8 experts of 352, top-2 (4× the MLP weights).
    "moe": dict(n_layers=4, d_model=256, n_heads=8, n_kv_heads=4, d_ff=704, vocab_size=2048, seq_len=64,
                moe=dict(experts=8, top_k=2, expert_d_ff=352)),
    # Long sequences (context parallelism): activations and the attention core dominate.
    **{f"ctx{k}k": dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=192, vocab_size=4096, seq_len=k * 1024)
       for k in (8, 16, 32)},
}


def micro_batch(size: str) -> int:
    return 1 if size.startswith("ctx") else MICRO_BATCH


def run_config(size: str, tp: int, pp: int, zero: int, interval: int, dp: int, ep: int = 1, cp: int = 1,
               tiled: int = 0):
    from llm.config import ModelConfig, OptimConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig
    from llm.config.model import MoEConfig
    shape = dict(PROBE_MODELS[size])
    if "moe" in shape:
        shape["moe"] = MoEConfig(**shape["moe"])
    parallel = ParallelConfig(tensor=tp, pipeline=pp, zero_stage=zero, expert=ep, context=cp, tiled_mlp=tiled,
                              activation_checkpointing={0: "none", 1: "full"}.get(interval, "every_k"),
                              recompute_every_k=max(1, interval),
                              deepspeed={"zero_optimization": {"reduce_bucket_size": BUCKET,
                                                               "allgather_bucket_size": BUCKET}})
    mb = micro_batch(size)
    train = TrainConfig(max_steps=2, global_batch_size=mb * MICRO_STEPS * dp, micro_batch_size=mb)
    # The per-parameter AdamW the memory model's CPU terms were calibrated with (llm/cost/memory.py
    # ADAM_TEMP_BYTES); the fused kernel (optim.fused, the default) allocates less, so those runs are over-predicted.
    return RunConfig(model=ModelConfig(**shape), train=train, parallel=parallel,
                     optim=OptimConfig(fused=False), precision=PrecisionConfig(dtype="bf16"),
                     out_dir="runs/layout_memory_probe")


def allocator_peak(fn) -> int:
    """Peak bytes torch's CPU allocator had handed out, beyond what it had before, while fn() ran."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type().name == "CPU")
    live, peak = 0, 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure(spec: str, launch, device) -> dict:
    import torch
    from llm.cost.layout import Layout
    from llm.cost.memory import memory_per_gpu
    from parallel.engine import DeepSpeedBackend
    from parallel.memory import measure_zero_bytes
    from parallel.topology import Topology

    size, tp, pp, zero, interval, *rest = spec.split(":")
    tp, pp, zero, interval = int(tp), int(pp), int(zero), int(interval)
    ep, cp, tiled = [int(rest[i]) if len(rest) > i else default for i, default in enumerate((1, 1, 0))]
    dp = launch.world_size // (tp * pp * cp)
    cfg = run_config(size, tp, pp, zero, interval, dp, ep, cp, tiled)
    topo = Topology(tp, pp, dp, cp=cp)
    backend = DeepSpeedBackend(cfg, topo, device)
    gen = torch.Generator().manual_seed(1000 + topo.dp_rank)

    def batches():
        return [torch.randint(0, cfg.model.vocab_size, (micro_batch(size), cfg.model.seq_len + 1), generator=gen)
                for _ in range(MICRO_STEPS)]

    backend.train_step(batches(), lr=cfg.optim.lr)
    states = measure_zero_bytes(backend.engine)
    held = states.total + states.buffers
    step_batches = batches()
    # A partial, not a lambda: no closure over `backend`, which is deleted below to free the engine.
    peak = held + allocator_peak(functools.partial(backend.train_step, step_batches, lr=cfg.optim.lr))
    layout = Layout(tp, pp, dp, zero, micro_batch(size), interval, ep=ep, context=cp, tiled_mlp=tiled)
    predicted = memory_per_gpu(cfg.model, layout, cfg.train.global_batch_size, reduce_bucket_size=BUCKET,
                               framework_bytes=0, fragmentation=0.0, foreach_adam=device.type == "cuda")
    row = {"layout": spec, "size": size, "tp": tp, "pp": pp, "dp": dp, "zero_stage": zero,
           "recompute_interval": interval, "ep": ep, "cp": cp, "tiled_mlp": tiled, "rank": launch.rank,
           "stage": topo.pp_rank,
           "measured_states": held, "measured_peak": peak, "predicted": predicted.as_dict()}
    del backend
    gc.collect()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("layouts", nargs="+")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    from parallel.launch_env import detect_launch
    from parallel.process_group import init_distributed
    from tests.parallel.zero_memory_probe import write_all_ranks_rows

    launch = detect_launch()
    device = init_distributed(launch)
    rows = [measure(spec, launch, device) for spec in args.layouts]
    write_all_ranks_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    from parallel.rank_exit import exit_rank
    exit_rank(main())
