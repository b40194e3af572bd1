"""Debug-mode training step vs a plain hand-written PyTorch loop, same model, batch and optimizer.

    python bench/bench_debug_step.py [--d-model 256 --n-layers 4 --seq-len 256 --batch 8 --steps 20]

Prints tokens/s of both, their ratio (target: ours >= 0.95x the plain loop) and the MFU of each against
this machine's measured matmul peak (llm/train/hardware.py). The two are timed interleaved, in rounds, so
drift in the machine's load hits both alike; the median round is reported.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.config import ModelConfig, RunConfig, TrainConfig  # noqa: E402
from llm.spec.flops import flops_per_token  # noqa: E402
from llm.model import Transformer  # noqa: E402
from llm.train.hardware import measure_matmul_flops  # noqa: E402
from llm.train.local import LocalBackend  # noqa: E402


def plain_loop(model, batches, steps, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(steps):
        for b in batches:
            logits = model(b[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten()) / len(batches)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def ours(backend, batches, steps, lr):
    for _ in range(steps):
        backend.train_step(batches, lr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="micro-batch size")
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per step")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    mcfg = ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.d_model // 64,
                       vocab_size=4096, seq_len=args.seq_len)
    cfg = RunConfig(model=mcfg, train=TrainConfig(max_steps=1, global_batch_size=args.batch * args.accum,
                                                  micro_batch_size=args.batch))
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 4096, (args.batch, args.seq_len + 1), generator=gen) for _ in range(args.accum)]
    backend = LocalBackend(cfg, device)
    plain = Transformer(mcfg, seed=0)
    tokens = args.steps * args.accum * args.batch * args.seq_len
    ours(backend, batches, 1, 1e-4)  # warm-up both
    plain_loop(plain, batches, 1, 1e-4)
    t_ours, t_plain = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        ours(backend, batches, args.steps, 1e-4)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_loop(plain, batches, args.steps, 1e-4)
        t_plain.append(time.perf_counter() - t0)
    peak = measure_matmul_flops(device, torch.float32)
    fpt = flops_per_token(mcfg, "palm")
    tps_ours, tps_plain = tokens / statistics.median(t_ours), tokens / statistics.median(t_plain)
    n = sum(p.numel() for p in plain.parameters())
    print(f"model: {n / 1e6:.2f}M params, {args.n_layers} layers, d_model {args.d_model}, seq {args.seq_len}, "
          f"batch {args.batch}x{args.accum}; torch threads {torch.get_num_threads()}")
    print(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"plain loop : {tps_plain:9.0f} tokens/s  MFU {fpt * tps_plain / peak:6.1%}")
    print(f"debug mode : {tps_ours:9.0f} tokens/s  MFU {fpt * tps_ours / peak:6.1%}")
    print(f"ratio ours/plain: {tps_ours / tps_plain:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
