"""Evaluate a checkpoint with lm-evaluation-harness (`pip install -e .[eval]`).

    python launch/evaluate.py --checkpoint runs/debug/checkpoints/step_00000200 \
        --tasks python_docs_ppl,python_docs_next_line [--include-path DIR] [--out results.json] [--limit N]

CHECKPOINT: a pretraining step directory of any layout, an alignment stage directory, a launch/import_hf.py
output or a Hugging Face model directory. The bundled tasks (llm/eval/tasks/) are built from the held-out split
of the bundled corpus. Offline: nothing is downloaded (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE are set) unless
--online, which also makes lm_eval's own tasks nameable. Prints the results table; --out FILE.json also writes
them as JSON with the table beside it (FILE.md). Progress (requests done, rate, ETA) shows as a bar on a terminal and
as a line every ~30 s on stderr otherwise, and in FILE.progress.log with --out. Exit 2, with one line, on a user
mistake.
"""
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from typed_yaml import log
from typed_yaml.errors import ConfigError, UserError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint, stage or HF model directory")
    ap.add_argument("--tasks", required=True, help="comma-separated task names (bundled or from --include-path)")
    ap.add_argument("--include-path", type=Path, action="append", default=[],
                    help="a folder of lm_eval task YAMLs (repeatable)")
    ap.add_argument("--out", type=Path, help="write the results JSON here (and the table beside it, .md)")
    ap.add_argument("--limit", type=int, help="evaluate only the first N documents of each task")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward (default: %(default)s)")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--online", action="store_true", help="allow downloads and lm_eval's own task library")
    args = ap.parse_args(argv)

    from llm.eval.run import OFFLINE_ENV, check_out_path, evaluate, progress_log_path, results_table, write_results
    if not args.online:
        os.environ.update(OFFLINE_ENV)
    try:
        importlib.import_module("lm_eval")
    except ImportError:
        raise UserError("lm-evaluation-harness is not installed: pip install -e '.[eval]' (or pip install lm_eval)") \
            from None
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_out_path(args.out)
    if args.device is not None:
        from llm.train.hardware import parse_device
        parse_device(args.device)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--tasks names no task")
    results = evaluate(args.checkpoint, tasks, args.include_path, args.limit, args.batch_size,
                       include_defaults=args.online, device=args.device, progress_log=progress_log_path(args.out))
    log.info(results_table(results))
    if args.out:
        json_path, table_path = write_results(results, args.out)
        log.info(f"wrote {json_path} and {table_path}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
