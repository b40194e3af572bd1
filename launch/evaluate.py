"""Evaluate a checkpoint with lm-evaluation-harness (`pip install -e .[eval]`), or by passkey retrieval.

    python launch/evaluate.py --checkpoint runs/debug/checkpoints/step_00000200 \
        --tasks python_docs_ppl,python_docs_next_line [--include-path DIR] [--out results.json] [--limit N]
    python launch/evaluate.py --checkpoint CKPT --passkey --out-dir DIR [--lengths 256,512,1024] \
        [--depths 0,0.25,0.5,0.75,1] [--trials 20] [--digits 5] [--extrapolate | --rope-scaling yarn]

CHECKPOINT: a pretraining step directory of any layout, an alignment stage directory, a launch/import_hf.py
output or a Hugging Face model directory. The bundled tasks (llm/eval/tasks/) are built from the held-out split
of the bundled corpus. Offline: nothing is downloaded (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE are set) unless
--online, which also makes lm_eval's own tasks nameable. Prints the results table; --out FILE.json also writes
them as JSON with the table beside it (FILE.md). Progress (requests done, rate, ETA) shows as a bar on a terminal and
as a line every ~30 s on stderr otherwise, and in FILE.progress.log with --out. Exit 2, with one line, on a user
mistake.

--passkey (llm/eval/passkey.py; Mohtashami & Jaggi 2023) needs no lm_eval: it scores greedy retrieval of a random
key hidden at each depth of filler text of each length, and writes DIR/passkey.json (accuracy per length and depth),
DIR/passkey.png (the heat map) and DIR/passkey.progress.log. A length past the model's seq_len is refused unless
--extrapolate (plain RoPE past the trained positions) or --rope-scaling TYPE (linear, llama3 or yarn applied without
training, original_seq_len = the model's seq_len) says how to reach it.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
from pathlib import Path

from typed_yaml import log
from typed_yaml.errors import ConfigError, UserError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint, stage or HF model directory")
    ap.add_argument("--tasks", help="comma-separated task names (bundled or from --include-path)")
    ap.add_argument("--include-path", type=Path, action="append", default=[],
                    help="a folder of lm_eval task YAMLs (repeatable)")
    ap.add_argument("--out", type=Path, help="write the results JSON here (and the table beside it, .md)")
    ap.add_argument("--limit", type=int, help="evaluate only the first N documents of each task")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward (default: %(default)s)")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--online", action="store_true", help="allow downloads and lm_eval's own task library")
    pk = ap.add_argument_group("passkey retrieval (instead of --tasks)")
    pk.add_argument("--passkey", action="store_true", help="evaluate passkey retrieval; writes into --out-dir")
    pk.add_argument("--out-dir", type=Path, help="where passkey.json, passkey.png and the progress log go")
    pk.add_argument("--lengths", default="256,512,1024", help="context lengths in tokens (default: %(default)s)")
    pk.add_argument("--depths", default="0,0.25,0.5,0.75,1",
                    help="needle depths, fractions of the filler (default: %(default)s)")
    pk.add_argument("--trials", type=int, default=20, help="random keys per cell (default: %(default)s)")
    pk.add_argument("--digits", type=int, default=5, help="digits of a key (default: %(default)s, the paper's)")
    pk.add_argument("--seed", type=int, default=0, help="seeds the keys (default: %(default)s)")
    pk.add_argument("--extrapolate", action="store_true", help="run plain RoPE past the model's seq_len")
    pk.add_argument("--rope-scaling", choices=("linear", "llama3", "yarn"),
                    help="scale an unscaled model's RoPE to the longest length, untrained")
    args = ap.parse_args(argv)
    if args.passkey == bool(args.tasks):
        raise ConfigError("give exactly one of --tasks and --passkey")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device is not None:
        from llm.train.hardware import parse_device
        parse_device(args.device)
    if args.passkey:
        return passkey(args)

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
    check_out_path(args.out)
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


def _numbers(text: str, kind: type, flag: str) -> list:
    parts = [v.strip() for v in text.split(",") if v.strip()]
    # Checked by pattern rather than by catching the conversion's ValueError (tests/test_errors.py).
    pattern = r"\d+" if kind is int else r"\d+(\.\d*)?|\.\d+"
    if any(re.fullmatch(pattern, v) is None for v in parts):
        raise ConfigError(f"{flag} {text!r} must be comma-separated {'integers' if kind is int else 'numbers'}")
    values = [kind(v) for v in parts]
    if not values:
        raise ConfigError(f"{flag} names nothing")
    return values


def passkey(args) -> int:
    from llm.eval.passkey import run_passkey
    if args.out_dir is None:
        raise ConfigError("--passkey needs --out-dir DIR (passkey.json and passkey.png are written there)")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise ConfigError(f"--out-dir {args.out_dir} is a file")
    lengths = _numbers(args.lengths, int, "--lengths")
    depths = _numbers(args.depths, float, "--depths")
    if not all(0 <= d <= 1 for d in depths):
        raise ConfigError(f"--depths {args.depths} must lie in [0, 1]")
    if args.trials < 1 or not 1 <= args.digits <= 20:
        raise ConfigError("--trials must be >= 1 and --digits between 1 and 20")
    if args.extrapolate and args.rope_scaling:
        raise ConfigError("--extrapolate and --rope-scaling exclude each other")
    results = run_passkey(args.checkpoint, args.out_dir, lengths, depths, args.trials, args.seed, args.digits,
                          args.batch_size, args.device, args.extrapolate, args.rope_scaling)
    for n, acc in results["accuracy_by_length"].items():
        log.info(f"passkey length {n}: accuracy {acc:.1%} over {len(depths)} depths × {args.trials} keys")
    log.info(f"passkey accuracy {results['accuracy']:.1%}, answer tokens {results['token_accuracy']:.1%} "
             f"({results['model_note']}); wrote "
             f"{args.out_dir / 'passkey.json'} and {args.out_dir / 'passkey.png'}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
