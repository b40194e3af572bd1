"""Plan a compute-optimal pretraining run from a FLOP or accelerator-hour budget.

    python launch/plan.py --flops 1e19
    python launch/plan.py --gpu-hours 1000 --gpu h100 --mfu 0.4 --json
    python launch/plan.py --flops 1e20 --approach 3 --write-config configs/pretrain/plan_1e20.yaml
    python launch/plan.py --gpu-hours 50000 --gpus 256 --gpu h100 --price-per-gpu-hour 2.5 --explain
    python launch/plan.py --config configs/pretrain/plan_1e20.yaml --gpus 16 --gpu a100-40gb --json
    python launch/plan.py --law runs/sweep/law.json --flops 1e15      # your own law, from launch/sweep.py
    python launch/plan.py --flops 3e15 --gpu cpu --mfu 0.3              # this machine: its peak timed here
    python launch/plan.py --flops 1e19 --gpu l40s --peak-tflops 362 --mfu 0.35   # a device not in the table

The time is for one device at --mfu of its peak: the datasheet's bf16 peak (llm/cost/flops.py), --peak-tflops, or
with --gpu cpu the peak of this machine's fp32 matmuls, timed once and cached (llm/train/hardware.py; the config
written is then fp32, as a CPU trains). A predicted loss outside the law's fitted range, or at or above ln V, is
flagged with the reason.

--write-config writes a config that trains, evaluates and exports as it is: data.paths and data.tokenizer come
from --data-path and --tokenizer (default: the bundled corpus that launch/prepare_data.py writes to
runs/data/python_docs/); a --data-path without --tokenizer takes the tokenizer prepare_data.py left beside it.

With --gpus the planner also chooses the parallel layout (llm/cost/layout_search.py) and predicts memory per
GPU, step time, wall-clock time, GPU-hours and cost (llm/cost/cluster.py); --write-config then writes that
layout with the predictions as comments.

The logic lives in llm/scaling/plan.py; this file only parses arguments and prints. Any user error prints one line
and exits with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from llm.config import ConfigError, load_config
from llm.cost.cluster import format_cluster, plan_cluster
from llm.cost.flops import ALIASES, PEAK_FLOPS
from llm.scaling.law import read_law
from llm.scaling.plan import (DEFAULT_DATA_PATH, DEFAULT_TOKENIZER, config_dict, config_header, format_table, plan,
                           plan_for_hours, repetition_warning)
from llm.shape import SHAPE_RULES
from llm.cost.step_time import ACHIEVABLE_MFU, canonical_gpu
from launch.cli import OneLineParser, positive


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _tp_degrees(text: str) -> tuple[int, ...]:
    try:
        degrees = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not degrees or min(degrees) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return degrees


def _write(path: Path, text: str) -> None:
    """Write the config, creating missing parent directories; ConfigError (one line) if that cannot be done."""
    if path.is_dir():
        raise ConfigError(f"--write-config {path} is a directory; give a file path such as {path / 'plan.yaml'}")
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--write-config {path} cannot be written: {existing} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise ConfigError(f"--write-config {path} cannot be written: {e.strerror or e}") from None


def _data_tokens(data_paths: list[str]) -> int | None:
    """Tokens in the prepared datasets (their .idx headers), or None when one is not prepared yet (a plan may come
    before the data); ConfigError naming a damaged one."""
    from data_pipeline.errors import DataError
    from data_pipeline.indexed import IndexedDataset
    if not all(Path(p + ".idx").is_file() and Path(p + ".bin").is_file() for p in data_paths):
        return None
    try:
        return sum(IndexedDataset(p).num_tokens() for p in data_paths)
    except (DataError, OSError) as e:  # a damaged index, an unreadable file
        raise ConfigError(f"--data-path: {e}") from None


def _tokenizer(data_paths: list[str] | None, tokenizer: str | None, vocab_size: int) -> str:
    """The data.tokenizer to write: --tokenizer, else the one launch/prepare_data.py left beside the first
    --data-path, else (no --data-path) the bundled corpus's. ConfigError (one line) when none is known, or when
    the tokenizer has more tokens than the vocabulary planned."""
    if tokenizer is None and data_paths:
        from data_pipeline.hf_tokenizer import tokenizer_file
        beside = tokenizer_file(Path(data_paths[0]).parent)
        if not beside.is_file():
            raise ConfigError(f"--write-config needs the tokenizer {data_paths[0]} was made with: none at {beside}; "
                             "pass --tokenizer PATH")
        tokenizer = str(beside)
    tokenizer = tokenizer or DEFAULT_TOKENIZER
    if Path(tokenizer).is_file():
        from data_pipeline.hf_tokenizer import load_tokenizer
        vocab = load_tokenizer(tokenizer).vocab_size
        if vocab > vocab_size:
            raise ConfigError(f"tokenizer {tokenizer} has {vocab:,} tokens, more than --vocab-size {vocab_size:,}: "
                             f"pass --vocab-size {vocab}")
    elif tokenizer != DEFAULT_TOKENIZER:
        raise ConfigError(f"--tokenizer {tokenizer} does not exist")
    return tokenizer


def _device_peak(args) -> tuple[float | None, str]:
    """(peak FLOP/s of one device, or None for the datasheet's; the device's name in the plan)."""
    if args.peak_tflops is not None:
        return args.peak_tflops * 1e12, args.gpu
    if canonical_gpu(args.gpu) == "cpu":  # trains in fp32 (the written config says so): time that
        import torch

        from llm.train.hardware import peak_flops as measured_peak
        peak, _ = measured_peak(torch.device("cpu"), "fp32")
        return peak, f"cpu ({torch.get_num_threads()} threads, fp32 peak measured)"
    return None, args.gpu


def _prediction_lines(cluster) -> list[str]:
    """The --write-config comment lines of a chosen layout: what was chosen, what it needs, how long it takes."""
    c, m, t = cluster.chosen, cluster.chosen.memory, cluster.chosen.time
    return [f"Layout chosen by launch/plan.py for {cluster.gpus} x {cluster.gpu} (llm/cost/layout_search.py): "
            f"{c.layout.describe()}.",
            f"  Predicted memory per GPU {m.total / 1e9:.1f} GB: params {m.params / 1e9:.1f}, "
            f"grads {m.grads / 1e9:.1f}, "
            f"optimizer {m.optimizer / 1e9:.1f}, buckets {m.buckets / 1e9:.1f} ({m.buckets_filled / 1e9:.1f} filled by "
            "gradients),",
            f"  activations {m.activations / 1e9:.1f}, logits {m.logits_and_loss / 1e9:.1f}, allowance "
            f"{m.allowance / 1e9:.1f} (llm/cost/memory.py).",
            f"  Predicted step {t.total_s:.3g} s, {cluster.tokens_per_s:,.0f} tokens/s, MFU {cluster.mfu:.1%}; "
            f"{cluster.wall_clock_h:,.1f} h wall clock, {cluster.gpu_hours:,.0f} GPU-hours"
            + ("" if cluster.cost is None else f", cost {cluster.cost:,.0f}") + "."]


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
    p.add_argument("--mfu", type=_fraction,
                   help="model FLOPs utilisation assumed (default: the GPU's achievable MFU, llm/cost/step_time.py)")
    p.add_argument("--gpus", type=_positive_int, help="GPUs of the cluster: choose the layout and predict time")
    p.add_argument("--gpus-per-node", type=_positive_int, default=8)
    p.add_argument("--gpu-memory", type=positive, metavar="GB", help="memory per GPU (default: the datasheet's)")
    p.add_argument("--price-per-gpu-hour", type=positive, metavar="X", help="per device-hour, for the cost estimate")
    p.add_argument("--explain", action="store_true", help="with --gpus: the ranked candidates and why rejected")
    p.add_argument("--approach", choices=["1", "2", "3", "3-rounded", "besiroglu"],
                   help="scaling law: Chinchilla approach 1/2/3 or the Besiroglu et al. 2024 refit (default)")
    p.add_argument("--law", metavar="LAW_JSON", help="plan with the law an isoFLOP sweep fitted (launch/sweep.py "
                   "writes DIR/law.json); the plan says which law and its bootstrap interval")
    p.add_argument("--shapes", choices=sorted(SHAPE_RULES),
                   help="shape designer rules (llm/shape.py): standard, or small for CPU-scale models "
                        "(default: the --law sweep's, else standard)")
    p.add_argument("--vocab-size", type=_positive_int, default=32000)
    p.add_argument("--seq-len", type=_positive_int, default=2048)
    p.add_argument("--tp-degrees", type=_tp_degrees, default=(1, 2, 4, 8),
                   help="tensor-parallel degrees the shape must divide, e.g. 1,2,4,8")
    p.add_argument("--tie-embeddings", action="store_true")
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

    if args.peak_tflops is None and canonical_gpu(args.gpu) not in {*PEAK_FLOPS, "cpu"}:
        known = ", ".join(sorted(set(PEAK_FLOPS) | set(ALIASES)))
        raise ConfigError(f"unknown accelerator {args.gpu!r}; known: {known}; for another device give "
                         "--peak-tflops X --mfu Y, or --gpu cpu")
    mfu = args.mfu if args.mfu is not None else ACHIEVABLE_MFU.get(canonical_gpu(args.gpu))
    if mfu is None:
        raise ConfigError(f"no achievable MFU listed for {args.gpu!r}; pass --mfu (a debug run's metrics.jsonl "
                         "shows what a device reaches)")
    if args.gpus is not None and (args.peak_tflops is not None or canonical_gpu(args.gpu) == "cpu"):
        raise ConfigError("--gpus plans a GPU cluster from llm/cost's tables; it takes a listed --gpu, not "
                         "--peak-tflops or cpu")
    if args.write_config and args.config is None:  # before the CPU's peak is timed
        tokenizer = _tokenizer(args.data_path, args.tokenizer, args.vocab_size)
    peak, device = _device_peak(args)
    if args.config is not None and args.gpus is None:
        raise ConfigError("--config plans only the layout of a fixed run: give --gpus N")
    if args.config is not None and args.shapes:
        raise ConfigError("--shapes chooses how a planned shape is designed; --config fixes the shape")
    spec, cluster = None, None
    if args.config is not None:
        run_cfg = load_config(args.config)
        for note in run_cfg.renamed_keys:
            print(f"warning: {note}", file=sys.stderr)
        model, tokens, gbs = run_cfg.model, run_cfg.total_steps * run_cfg.tokens_per_step, \
            run_cfg.train.global_batch_size
    else:
        law = read_law(args.law) if args.law else (args.approach or "besiroglu")
        shapes = args.shapes or (law.shapes if args.law else "standard")
        kwargs = dict(approach=law, vocab_size=args.vocab_size, seq_len=args.seq_len,
                      tp_degrees=args.tp_degrees, tie_embeddings=args.tie_embeddings, shapes=SHAPE_RULES[shapes])
        kwargs.update(peak=peak, price_per_hour=args.price_per_gpu_hour)
        spec = plan(args.flops, accelerator=device, mfu=mfu, **kwargs) if args.flops is not None \
            else plan_for_hours(args.gpu_hours, device, mfu, **kwargs)
        if args.law:
            spec.law_note = law.describe(spec.flops)
        if args.data_path:
            spec.data_tokens = _data_tokens(args.data_path)
            if spec.data_tokens is not None:
                spec.data_warning = repetition_warning(spec.n_tokens, spec.data_tokens)
            else:
                spec.data_warning = (f"--data-path {args.data_path[0]} is not prepared yet (no .bin/.idx): D is "
                                     "not checked against the data's size")
        model, tokens, gbs = spec.model, spec.n_tokens, spec.global_batch_size
    if args.gpus is not None:
        cluster = plan_cluster(model, tokens, gbs, args.gpus, args.gpu, args.gpus_per_node, args.gpu_memory,
                               args.price_per_gpu_hour, args.mfu)
        if spec is not None:  # the spec's one-device micro-batch is a default; the chosen layout's replaces it
            spec = dataclasses.replace(spec, micro_batch_size=cluster.chosen.layout.micro_batch_size)
    if args.write_config:
        if spec is None:
            raise ConfigError("--write-config writes a planned spec; it cannot be combined with --config")
        raw = config_dict(spec, data_paths=args.data_path, out_dir=args.out_dir,
                          layout=cluster.chosen.layout if cluster else None, tokenizer=tokenizer,
                          precision="fp32" if canonical_gpu(args.gpu) == "cpu" else "bf16")
        header = config_header(spec, _prediction_lines(cluster) if cluster else None)
        _write(Path(args.write_config), header + yaml.safe_dump(raw, sort_keys=False))

    if args.json:
        out = spec.to_json() if spec else {}
        if cluster:
            out = {**out, "mfu_assumed": out.pop("mfu", mfu), **cluster.to_json()}
        print(json.dumps(out))
    else:
        print("\n\n".join(x for x in (spec and format_table(spec), cluster and format_cluster(cluster, args.explain))
                          if x))
        if args.write_config:
            print(f"wrote {args.write_config}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
