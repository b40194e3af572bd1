"""Plan a compute-optimal pretraining run from a FLOP or accelerator-hour budget.

    python launch/plan.py --flops 1e19
    python launch/plan.py --gpu-hours 1000 --gpu h100 --mfu 0.4 --json
    python launch/plan.py --flops 1e20 --approach 3 --write-config configs/pretrain/plan_1e20.yaml

The logic lives in llm/spec/plan.py; this file only parses arguments and prints. Any user error prints one line
and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402  (after the path fix so `llm` resolves when run as a script)

from llm.config import ConfigError  # noqa: E402
from llm.spec.plan import DEFAULT_DATA_PATH, config_dict, config_header, flops_from_hours, format_table, plan  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse takes "-1e19" (exponent) or "-inf" for an option name and reports "expected one argument";
        # no option here looks like a number, so every number-looking token is a value and the type's own
        # message ("must be positive") is what the user sees. Widening this matcher is the only hook argparse has.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


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
    """Write the config, creating missing parent directories; ValueError (one line) if that cannot be done."""
    if path.is_dir():
        raise ValueError(f"--write-config {path} is a directory; give a file path such as {path / 'plan.yaml'}")
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--write-config {path} cannot be written: {existing} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise ValueError(f"--write-config {path} cannot be written: {e.strerror or e}") from None


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="plan.py", description=__doc__.split("\n\n")[0])
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops", type=_positive, help="training budget C in FLOPs (C = 6ND)")
    budget.add_argument("--gpu-hours", type=_positive, help="budget in accelerator-hours (with --gpu and --mfu)")
    p.add_argument("--gpu", default="h100", help="accelerator for --gpu-hours and the time estimate (default h100)")
    p.add_argument("--mfu", type=_fraction, default=0.4, help="model FLOPs utilisation assumed (default 0.4)")
    p.add_argument("--approach", default="besiroglu", choices=["1", "2", "3", "3-rounded", "besiroglu"],
                   help="scaling law: Chinchilla approach 1/2/3 or the Besiroglu et al. 2024 refit (default)")
    p.add_argument("--vocab-size", type=_positive_int, default=32000)
    p.add_argument("--seq-len", type=_positive_int, default=2048)
    p.add_argument("--tp-degrees", type=_tp_degrees, default=(1, 2, 4, 8),
                   help="tensor-parallel degrees the shape must divide, e.g. 1,2,4,8")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--write-config", metavar="PATH", help="write a pretraining YAML config for this spec")
    p.add_argument("--data-path", action="append", help=f"dataset prefix (repeatable; default {DEFAULT_DATA_PATH})")
    p.add_argument("--out-dir", help="out_dir of the written config (default runs/pretrain_<N>)")
    args = p.parse_args(argv)

    try:
        flops = args.flops if args.flops is not None else flops_from_hours(args.gpu_hours, args.gpu, args.mfu)
        spec = plan(flops, approach=args.approach, vocab_size=args.vocab_size, seq_len=args.seq_len,
                    tp_degrees=args.tp_degrees, tie_embeddings=args.tie_embeddings, accelerator=args.gpu,
                    mfu=args.mfu)
        if args.write_config:
            raw = config_dict(spec, data_paths=args.data_path, out_dir=args.out_dir)
            _write(Path(args.write_config), config_header(spec) + yaml.safe_dump(raw, sort_keys=False))
    except (ValueError, ConfigError) as e:
        print(f"plan.py: error: {e}", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps(spec.to_json()))
    else:
        print(format_table(spec))
        if args.write_config:
            print(f"wrote {args.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
