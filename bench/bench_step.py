"""Training-step throughput, in one process and interleaved: our debug step (eager and `train.compile`), transformers'
LlamaForCausalLM on identical weights, and a plain hand-written PyTorch loop.

    python bench/bench_step.py [--d-model 256 --n-layers 4 --seq-len 256 --batch 8 --accum 2 --steps 3 --rounds 5]

All four use the same batches, the same fused AdamW with the same parameter groups and clipping. They are timed
in rounds, one after the other within each round, so drift in the machine's load hits all alike. Reported: the
fastest round (the least disturbed by other processes on a shared machine) and the median; the matmul peak is the
best of a measurement before and after. Prints tokens/s, the ratios and the MFU of each against this machine's measured fp32 matmul peak
(llm/train/hardware.py; FLOPs per token as PaLM App. B, llm/spec/flops.py). Targets on 2 CPU cores: compiled
>= 1.15x LlamaForCausalLM, MFU >= 55% of the measured peak.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.config import ModelConfig, OptimConfig, RunConfig, TrainConfig  # noqa: E402
from llm.hf.convert import hf_config_dict, to_hf_name  # noqa: E402
from llm.model import Transformer  # noqa: E402
from llm.spec.flops import flops_per_token  # noqa: E402
from llm.train.hardware import measure_matmul_flops  # noqa: E402
from llm.train.local import LocalBackend  # noqa: E402
from llm.train.optim import param_groups  # noqa: E402


def hand_step(model, opt, batches, logits_of):
    """The textbook step: forward, cross-entropy over full logits, backward, clip, AdamW."""
    for b in batches:
        loss = F.cross_entropy(logits_of(model, b[:, :-1]).flatten(0, 1), b[:, 1:].flatten()) / len(batches)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def llama_for_causal_lm(ours: Transformer):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = ours.cfg
    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(cfg, -1, -1, -1, "float32"), attn_implementation="sdpa"))
    state = {to_hf_name(k): v for k, v in ours.state_dict().items()}
    hf.load_state_dict(state, strict=False)
    return hf


def adamw(model):
    return torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95), fused=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8, help="micro-batch size")
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per step")
    ap.add_argument("--steps", type=int, default=1, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    mcfg = ModelConfig(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.d_model // 32,
                       n_kv_heads=args.d_model // 64, d_ff=(8 * args.d_model // 3 + 63) // 64 * 64,
                       vocab_size=args.vocab, seq_len=args.seq_len)
    device = torch.device("cpu")

    def backend(compile):
        cfg = RunConfig(model=mcfg, optim=OptimConfig(fused=True), train=TrainConfig(
            max_steps=1, global_batch_size=args.batch * args.accum, micro_batch_size=args.batch, compile=compile))
        return LocalBackend(cfg, device)

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=gen) for _ in range(args.accum)]
    eager, compiled = backend(False), backend(True)
    plain = Transformer(mcfg, seed=0)
    hf = llama_for_causal_lm(plain)
    plain_opt, hf_opt = adamw(plain), adamw(hf)
    runs = {
        "debug mode, eager": lambda: eager.train_step(batches, 1e-4),
        "debug mode, compiled": lambda: compiled.train_step(batches, 1e-4),
        "LlamaForCausalLM": lambda: hand_step(hf, hf_opt, batches, lambda m, x: m(input_ids=x).logits),
        "plain loop": lambda: hand_step(plain, plain_opt, batches, lambda m, x: m(x)),
    }
    peak = measure_matmul_flops(device, torch.float32)
    t0 = time.perf_counter()
    for run in runs.values():  # warm-up; compiles the compiled backend's blocks
        run()
    warmup_s = time.perf_counter() - t0
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                run()
            times[name].append(time.perf_counter() - t0)
    peak = max(peak, measure_matmul_flops(device, torch.float32))
    fpt = flops_per_token(mcfg, "palm")
    tokens = args.steps * args.accum * args.batch * args.seq_len
    tps = {name: tokens / min(t) for name, t in times.items()}
    tps_median = {name: tokens / statistics.median(t) for name, t in times.items()}
    n = sum(p.numel() for p in plain.parameters())
    print(f"model: {n / 1e6:.2f}M params, {args.n_layers} layers, d_model {args.d_model}, vocab {args.vocab}, "
          f"seq {args.seq_len}, batch {args.batch}x{args.accum}; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; warm-up (compile included) {warmup_s:.0f} s")
    print(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    for name, v in tps.items():
        print(f"{name:22s}: {v:9.0f} tokens/s  MFU {fpt * v / peak:6.1%}  (median round {tps_median[name]:6.0f} "
              f"tokens/s, max/min round {max(times[name]) / min(times[name]):.2f})")
    for label, t in (("fastest rounds", tps), ("median rounds", tps_median)):
        hf_tps = t["LlamaForCausalLM"]
        print(f"{label}: compiled / LlamaForCausalLM {t['debug mode, compiled'] / hf_tps:.3f} (target >= 1.15), "
              f"eager / LlamaForCausalLM {t['debug mode, eager'] / hf_tps:.3f}, "
              f"eager / plain loop {t['debug mode, eager'] / t['plain loop']:.3f}, "
              f"compiled / eager {t['debug mode, compiled'] / t['debug mode, eager']:.3f}")
    print(f"compiled MFU: {fpt * tps['debug mode, compiled'] / peak:.1%} (target >= 55%)")

if __name__ == "__main__":
    main()
