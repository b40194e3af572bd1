"""The `plan` command's work (launch/plan.py, `llm-forge plan`), once its arguments are parsed.

The time is for one device at --mfu of its peak: the datasheet's bf16 peak (llm/cost/flops.py), --peak-tflops, or
with --gpu cpu the peak of this machine's fp32 matmuls, timed once and cached (llm/train/hardware.py; the config
written is then fp32, as a CPU trains). A predicted loss outside the law's fitted range, or at or above ln V, is
flagged with the reason.

--write-config writes a config that trains, evaluates and exports as it is: data.paths and data.tokenizer come
from --data-path and --tokenizer (default: the bundled corpus that launch/prepare_data.py writes to
runs/data/python_docs/); a --data-path without --tokenizer takes the tokenizer prepare_data.py left beside it.

--moe plans a mixture of experts instead (llm/scaling/moe_plan.py): the law's granularity, experts and size, and the
dense plan for the same budget beside it; with --gpus its layout, expert parallelism included.

With --gpus the planner also chooses the parallel layout (llm/cost/layout_search.py) and predicts memory per
GPU, step time, wall-clock time, GPU-hours and cost (llm/cost/cluster.py); --write-config then writes that
layout with the predictions as comments. --context limits the context-parallel degrees it considers, each
refused in one line when it breaks a rule. --longest-seq instead lists, per layout, the longest seq_len that fits
(llm/cost/longest_seq.py), for the planned model or --config's (whose data.document_mask it counts).

This module sits above the rest of llm/scaling (docs/architecture.md): it reads prepared data (data_pipeline) and
times a CPU (llm.train.hardware). Every user error is a ConfigError, one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from llm.config import ConfigError, load_config
from llm.cost.cluster import format_cluster, gpu_memory_bytes, plan_cluster
from llm.cost.flops import ALIASES, PEAK_FLOPS
from llm.cost.longest_seq import format_longest_seq, longest_seq_table
from llm.cost.step_time import ACHIEVABLE_MFU, canonical_gpu
from llm.scaling.law import read_law
from llm.scaling.moe_plan import format_moe_table, plan_moe, plan_moe_for_hours
from llm.scaling.plan import DEFAULT_TOKENIZER, plan, plan_for_hours, repetition_warning
from llm.scaling.plan_output import config_dict, config_header, format_table, prediction_lines
from llm.shape import SHAPE_RULES
from typed_yaml import log


def write_config(path: Path, text: str) -> None:
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


def data_tokens(data_paths: list[str]) -> int | None:
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


def config_tokenizer(data_paths: list[str] | None, tokenizer: str | None, vocab_size: int) -> str:
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


def device_peak(args: argparse.Namespace) -> tuple[float | None, str]:
    """(peak FLOP/s of one device, or None for the datasheet's; the device's name in the plan)."""
    if args.peak_tflops is not None:
        return args.peak_tflops * 1e12, args.gpu
    if canonical_gpu(args.gpu) == "cpu":  # trains in fp32 (the written config says so): time that
        from llm.train.hardware import cpu_plan_peak
        return cpu_plan_peak()
    return None, args.gpu


def run_moe_plan(args: argparse.Namespace, mfu: float) -> int:
    """`plan --moe`: the MoE spec, the dense one beside it and, with --gpus, the MoE model's layout."""
    for flag, given in (("--config", args.config), ("--law", args.law), ("--approach", args.approach),
                        ("--write-config", args.write_config), ("--data-path", args.data_path)):
        if given:
            raise ConfigError(f"--moe does not combine with {flag} yet: it plans from Krajewski et al. 2024's law and "
                              "prints the spec (write the config's model.moe by hand from it)")
    kwargs = dict(vocab_size=args.vocab_size, seq_len=args.seq_len, tp_degrees=args.tp_degrees,
                  tie_embeddings=args.tie_embeddings, shapes=SHAPE_RULES[args.shapes or "standard"])
    if args.flops is not None:
        spec = plan_moe(args.flops, **kwargs)
    else:
        peak, device = device_peak(args)
        spec = plan_moe_for_hours(args.gpu_hours, device, mfu, peak=peak, **kwargs)
    cluster = None
    if args.gpus is not None:
        cluster = plan_cluster(spec.model, spec.n_tokens, spec.global_batch_size, args.gpus, args.gpu,
                               args.gpus_per_node, args.gpu_memory, args.price_per_gpu_hour, args.mfu, args.context)
    if args.json:
        log.info(json.dumps({**spec.to_json(), **(cluster.to_json() if cluster else {})}))
    else:
        tables = (format_moe_table(spec), cluster and format_cluster(cluster, args.explain))
        log.info("\n\n".join(x for x in tables if x))
    return 0


def print_longest_seq(args: argparse.Namespace, model, spec) -> int:
    """`plan --longest-seq`: the longest seq_len per layout of `model` on the --gpus cluster (after the spec's table,
    when one was planned)."""
    memory = gpu_memory_bytes(args.gpu, args.gpu_memory)
    rows = longest_seq_table(model, args.gpus, memory, args.gpus_per_node, args.context, args.document_mask)
    if args.json:
        log.info(json.dumps({**(spec.to_json() if spec else {}), "gpus": args.gpus, "gpu": args.gpu,
                             "gpu_memory_bytes": memory, "document_mask": args.document_mask,
                             "longest_seq": [r.as_dict() for r in rows]}))
    else:
        table = format_longest_seq(rows, f"{args.gpus} x {args.gpu}", memory, args.document_mask,
                                   None if args.explain else 12)
        log.info("\n\n".join(x for x in (spec and format_table(spec), table) if x))
    return 0


def run_plan(args: argparse.Namespace) -> int:
    """Plan what launch/plan.py's parsed `args` ask for; print the table or JSON, write the config. Returns 0;
    raises ConfigError (one line) on a user error."""
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
        tokenizer = config_tokenizer(args.data_path, args.tokenizer, args.vocab_size)
    if args.longest_seq and (args.gpus is None or args.write_config or getattr(args, "moe", False)):
        raise ConfigError("--longest-seq lists the longest seq_len per layout of a dense model on a cluster: give "
                          "--gpus N, and neither --write-config nor --moe")
    if args.document_mask and not args.longest_seq:
        raise ConfigError("--document-mask counts the attention mask in --longest-seq's search: give --longest-seq")
    if getattr(args, "moe", False):
        return run_moe_plan(args, mfu)
    peak, device = device_peak(args)
    if args.config is not None and args.gpus is None:
        raise ConfigError("--config plans only the layout of a fixed run: give --gpus N")
    if args.config is not None and args.shapes:
        raise ConfigError("--shapes chooses how a planned shape is designed; --config fixes the shape")
    spec, cluster = None, None
    if args.config is not None:
        run_cfg = load_config(args.config)
        for note in run_cfg.renamed_keys:  # on stderr: stdout is the plan, one JSON object with --json
            print(f"warning: {note}", file=sys.stderr)
        model, tokens, gbs = run_cfg.model, run_cfg.total_steps * run_cfg.tokens_per_step, \
            run_cfg.train.global_batch_size
        args.document_mask = args.document_mask or run_cfg.data.document_mask
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
            spec.data_tokens = data_tokens(args.data_path)
            if spec.data_tokens is not None:
                spec.data_warning = repetition_warning(spec.n_tokens, spec.data_tokens)
            else:
                spec.data_warning = (f"--data-path {args.data_path[0]} is not prepared yet (no .bin/.idx): D is "
                                     "not checked against the data's size")
        model, tokens, gbs = spec.model, spec.n_tokens, spec.global_batch_size
    if args.longest_seq:
        return print_longest_seq(args, model, spec)
    if args.gpus is not None:
        cluster = plan_cluster(model, tokens, gbs, args.gpus, args.gpu, args.gpus_per_node, args.gpu_memory,
                               args.price_per_gpu_hour, args.mfu, args.context)
        if spec is not None:  # the spec's one-device micro-batch is a default; the chosen layout's replaces it
            spec = dataclasses.replace(spec, micro_batch_size=cluster.chosen.layout.micro_batch_size)
    if args.write_config:
        if spec is None:
            raise ConfigError("--write-config writes a planned spec; it cannot be combined with --config")
        raw = config_dict(spec, data_paths=args.data_path, out_dir=args.out_dir,
                          layout=cluster.chosen.layout if cluster else None, tokenizer=tokenizer,
                          precision="fp32" if canonical_gpu(args.gpu) == "cpu" else "bf16")
        header = config_header(spec, prediction_lines(cluster) if cluster else None)
        write_config(Path(args.write_config), header + yaml.safe_dump(raw, sort_keys=False))

    if args.json:
        out = spec.to_json() if spec else {}
        if cluster:
            out = {**out, "mfu_assumed": out.pop("mfu", mfu), **cluster.to_json()}
        log.info(json.dumps(out))
    else:
        log.info("\n\n".join(x for x in (spec and format_table(spec), cluster and format_cluster(cluster, args.explain))
                             if x))
        if args.write_config:
            log.info(f"wrote {args.write_config}")
    return 0
