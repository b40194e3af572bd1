"""Measured pipeline bubble of DeepSpeed's 1F1B schedule against the theory (p − 1)/(m + p − 1).

    python bench/bench_pipeline_bubble.py [--m 1 2 4 8 16] [--steps 3] [--layers 8 --d-model 256 --seq-len 128]

Starts itself under `deepspeed --num_gpus 2` (pp=2, CPU/gloo when there is no GPU) unless already launched.

With p stages of equal time t (forward + backward of one micro-batch) and m micro-batches, 1F1B (Narayanan
et al. 2021, PipeDream-Flush, arXiv:2104.04473 §2.2; Huang et al. 2019 GPipe's bubble, arXiv:1811.06965)
keeps each stage busy m·t out of (m + p − 1)·t, so the idle ("bubble") fraction is (p − 1)/(m + p − 1).

Measured: each rank times the pipeline instructions DeepSpeed executes in `train_batch` (the engine's
instruction map, wrapped per instance). Busy = forward + backward passes (incl. loading a micro-batch and the
loss). Span = the schedule's makespan, from a common start (after a barrier) to the last backward pass of any
stage, on the host's monotonic clock; the optimizer step and gradient reductions that follow are outside the
formula. Bubble of a stage = 1 − busy / span. The stage with the most work (least idle) is the one the
formula describes; the other also waits for the imbalance. Point-to-point transfers count as idle.
Timings are medians over --steps steps; on a shared CPU machine expect a few points of noise.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUSY = ("ForwardPass", "BackwardPass", "LoadMicroBatch")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="micro-batches per step")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per m (after one warm-up step)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def theory(p: int, m: int) -> float:
    return (p - 1) / (m + p - 1)


def _config(args, m: int):
    from llm.config import ModelConfig, OptimConfig, ParallelConfig, RunConfig, TrainConfig
    model = ModelConfig(n_layers=args.layers, d_model=args.d_model, n_heads=4, vocab_size=args.vocab_size,
                        seq_len=args.seq_len)
    train = TrainConfig(max_steps=args.steps + 1, global_batch_size=m * args.micro_batch_size,
                        micro_batch_size=args.micro_batch_size)
    return RunConfig(model=model, train=train, optim=OptimConfig(warmup_steps=0),
                     parallel=ParallelConfig(pipeline=2), out_dir="runs/bench_pipeline_bubble")


def _instrument(engine) -> dict:
    """Wrap this engine's pipeline instructions: per-kind wall-time totals, and the end time of the last
    backward pass (`time.monotonic`, one clock for every process on the host)."""
    totals: dict = defaultdict(float)

    def timed(name, fn):
        def run(self, **kwargs):
            t0 = time.monotonic()
            fn(self, **kwargs)
            t1 = time.monotonic()
            totals[name] += t1 - t0
            if name == "BackwardPass":
                totals["last_backward_end"] = t1
        return run

    engine._INSTRUCTION_MAP = {kind: timed(kind.__name__, fn) for kind, fn in type(engine)._INSTRUCTION_MAP.items()}
    return totals


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from parallel.engine import DeepSpeedBackend
    from parallel.process_group import init_distributed
    from parallel.launch_env import detect_launch
    from parallel.topology import Topology

    launch = detect_launch()
    device = init_distributed(launch)
    topo = Topology(1, 2, launch.world_size // 2)
    torch.manual_seed(0)
    records = []
    for m in args.m:
        cfg = _config(args, m)
        backend = DeepSpeedBackend(cfg, topo, device)
        engine = backend.engine
        totals = _instrument(engine)
        gen = torch.Generator().manual_seed(m)
        for step in range(args.steps + 1):
            data = [torch.randint(0, cfg.model.vocab_size, (args.micro_batch_size, cfg.model.seq_len + 1),
                                  generator=gen) for _ in range(m)]
            it = iter([(b[:, :-1].to(device), b[:, 1:].to(device)) for b in data])
            totals.clear()
            dist.barrier()
            start = time.monotonic()
            engine.train_batch(data_iter=it)
            if step:  # step 0 warms up: buffer allocation, first p2p handshakes
                records.append({"m": m, "step": step, "stage": topo.pp_rank, "dp": topo.dp_rank, "start": start,
                                "end": totals["last_backward_end"], "busy": sum(totals[k] for k in BUSY)})
        del backend, engine
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, records)
    if dist.get_rank() == 0:
        print(report([r for rank in gathered for r in rank if r["dp"] == 0], p=2), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def bubbles(records: list[dict], p: int) -> dict[int, dict]:
    """{m: {'stage': [median idle fraction of each stage], 'span': median span (s), 'busy': [median busy (s)]}}.

    The span of a step is the schedule's makespan: from the common start (after a barrier) to the end of the
    last backward pass on any stage; idle of a stage = 1 - its forward/backward time / span.
    """
    from statistics import median
    steps: dict = defaultdict(dict)
    for r in records:
        steps[(r["m"], r["step"])][r["stage"]] = r
    out: dict = {}
    for (m, _), st in sorted(steps.items()):
        span = max(r["end"] for r in st.values()) - min(r["start"] for r in st.values())
        row = out.setdefault(m, {"span": [], "idle": [[] for _ in range(p)], "busy": [[] for _ in range(p)]})
        row["span"].append(span)
        for s in range(p):
            row["idle"][s].append(1 - st[s]["busy"] / span)
            row["busy"][s].append(st[s]["busy"])
    return {m: {"span": median(r["span"]), "idle": [median(x) for x in r["idle"]],
                "busy": [median(x) for x in r["busy"]]} for m, r in out.items()}


def report(records: list[dict], p: int) -> str:
    lines = [f"1F1B pipeline bubble, p={p} stages (DeepSpeed train_batch; medians over steps)",
             f"{'m':>3}  {'theory':>7}  {'measured':>8}  " + "  ".join(f"{'idle s' + str(s):>7}" for s in range(p))
             + f"  {'busy per stage (s)':>20}  {'span (s)':>8}"]
    for m, b in sorted(bubbles(records, p).items()):
        # The stage with the most work idles least: that one is what the formula describes.
        lines.append(f"{m:3d}  {theory(p, m):7.3f}  {min(b['idle']):8.3f}  "
                     + "  ".join(f"{x:7.3f}" for x in b["idle"])
                     + f"  {'/'.join(f'{x:.3f}' for x in b['busy']):>20}  {b['span']:8.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "RANK" in os.environ:
        worker(args)
        return 0
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"), OMP_NUM_THREADS="1")
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(port), __file__, *(argv or sys.argv[1:])]
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    from parallel.rank_exit import exit_rank
    exit_rank(main())
