"""Plan a compute-optimal pretraining run from a FLOP or accelerator-hour budget.

    python launch/plan.py --flops 1e19
    python launch/plan.py --gpu-hours 1000 --gpu h100 --mfu 0.4 --json
    python launch/plan.py --flops 1e20 --approach 3 --write-config configs/pretrain/plan_1e20.yaml
    python launch/plan.py --gpu-hours 50000 --gpus 256 --gpu h100 --price-per-gpu-hour 2.5 --explain
    python launch/plan.py --config configs/pretrain/plan_1e20.yaml --gpus 16 --gpu a100-40gb --json
    python launch/plan.py --law runs/sweep/law.json --flops 1e15      # your own law, from launch/sweep.py
    python launch/plan.py --flops 3e15 --gpu cpu --mfu 0.3              # this machine: its peak timed here
    python launch/plan.py --flops 1e19 --gpu l40s --peak-tflops 362 --mfu 0.35   # a device not in the table
    python launch/plan.py --flops 1e21 --moe --gpus 64 --gpu h100   # a mixture of experts, the dense plan beside
    python launch/plan.py --config configs/debug.yaml --gpus 8 --gpu h100 --longest-seq   # longest seq_len per layout

This file only parses the arguments; llm/scaling/plan_command.py plans (its docstring says how the time, the
written config and the layout are found). Any user error prints one line and exits with status 2.
"""
from __future__ import annotations

from pathlib import Path

from typed_yaml.args import OneLineParser, fraction, positive, positive_int, positive_ints
from llm.scaling.plan import DEFAULT_DATA_PATH, DEFAULT_TOKENIZER
from llm.scaling.plan_command import run_plan
from llm.shape import SHAPE_RULES


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description=__doc__.split("\n\n")[0])  # prog: plan.py, or "llm-forge plan"
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--flops", type=positive, help="training budget C in FLOPs (C = 6ND)")
    budget.add_argument("--gpu-hours", type=positive, help="budget in accelerator-hours (with --gpu and --mfu)")
    p.add_argument("--config", type=Path, help="a fixed run config: choose only its layout (needs --gpus)")
    p.add_argument("--gpu", default="h100", help="accelerator for --gpu-hours and the time estimate (default h100); "
                   "'cpu' times this machine's peak")
    p.add_argument("--peak-tflops", type=positive, metavar="X",
                   help="dense peak TFLOP/s of one device in bf16, for a device not in llm/cost/flops.py (with --mfu)")
    p.add_argument("--mfu", type=fraction,
                   help="model FLOPs utilisation assumed (default: the GPU's achievable MFU, llm/cost/step_time.py)")
    p.add_argument("--gpus", type=positive_int, help="GPUs of the cluster: choose the layout and predict time")
    p.add_argument("--gpus-per-node", type=positive_int, default=8)
    p.add_argument("--gpu-memory", type=positive, metavar="GB", help="memory per GPU (default: the datasheet's)")
    p.add_argument("--price-per-gpu-hour", type=positive, metavar="X", help="per device-hour, for the cost estimate")
    p.add_argument("--explain", action="store_true", help="with --gpus: the ranked candidates and why rejected")
    p.add_argument("--context", type=positive_ints, metavar="DEGREES",
                   help="with --gpus: the context-parallel (Ulysses) degrees to consider, e.g. 1,2,4,8 (default: "
                        "every one the rules allow)")
    p.add_argument("--longest-seq", action="store_true",
                   help="with --gpus: the longest seq_len each layout (tp, pp, context, dp, ZeRO, recompute) fits in "
                        "the GPU's memory (llm/cost/longest_seq.py), instead of choosing one layout")
    p.add_argument("--document-mask", action="store_true",
                   help="with --longest-seq: count data.document_mask's seq x seq attention mask (--config: its own "
                        "data.document_mask)")
    p.add_argument("--approach", choices=["1", "2", "3", "3-rounded", "besiroglu"],
                   help="scaling law: Chinchilla approach 1/2/3 or the Besiroglu et al. 2024 refit (default)")
    p.add_argument("--law", metavar="LAW_JSON", help="plan with the law an isoFLOP sweep fitted (launch/sweep.py "
                   "writes DIR/law.json); the plan says which law and its bootstrap interval")
    p.add_argument("--shapes", choices=sorted(SHAPE_RULES),
                   help="shape designer rules (llm/shape.py): standard, or small for CPU-scale models "
                        "(default: the --law sweep's, else standard)")
    p.add_argument("--vocab-size", type=positive_int, default=32000)
    p.add_argument("--seq-len", type=positive_int, default=2048)
    p.add_argument("--tp-degrees", type=positive_ints, default=(1, 2, 4, 8),
                   help="tensor-parallel degrees the shape must divide, e.g. 1,2,4,8")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--moe", action="store_true", help="plan a mixture-of-experts model from Krajewski et al. 2024's "
                   "fine-grained MoE law (llm/scaling/moe_plan.py), with the dense plan beside it")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--write-config", metavar="PATH", help="write a pretraining YAML config for this spec")
    p.add_argument("--data-path", action="append", help=f"dataset prefix (repeatable; default {DEFAULT_DATA_PATH})")
    p.add_argument("--tokenizer", help="the tokenizer the datasets were made with (default: the one beside the "
                   f"first --data-path, or {DEFAULT_TOKENIZER})")
    p.add_argument("--out-dir", help="out_dir of the written config (default runs/pretrain_<N>)")
    args = p.parse_args(argv)
    if (args.flops is None and args.gpu_hours is None) == (args.config is None):
        p.error("one of the arguments --flops --gpu-hours is required (or --config with --gpus), and only one")
    if args.law and args.approach:
        p.error("--law and --approach both choose the law: give one")

    return run_plan(args)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
