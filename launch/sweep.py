"""Run an isoFLOP sweep, fit your own scaling law, draw it, and write the law plan.py can use.

    python launch/sweep.py --budgets 1e12 3e12 1e13 [--sizes-per-budget 5] [--config BASE.yaml] --out DIR
    python launch/sweep.py --budgets ... --out DIR --slurm [--sbatch-arg=--cpus-per-task=4 ...]
    python launch/sweep.py --budgets ... --out DIR --family dense --family moe8 experts=8 top_k=2
    python launch/plan.py --law DIR/law.json --flops 1e15

Each point is one pretraining config, DIR/points/NAME/config.yaml, the base config (--config, default
configs/debug.yaml) supplying data, tokenizer, precision and evaluation; the points run here one after the other
(debug mode), or with --slurm as one job array through launch/slurm/sweep.sbatch. Rerunning the same command resumes.
Out: DIR/law.json, DIR/report.md, DIR/isoflop.png; with --family, each family's under DIR/families/NAME/ and
their comparison at equal loss in DIR/compare.md, compare.json and compare.png (llm/sweep/families.py, compare.py).
A user error prints one line and exits 2; a failed run exits 1 and names its log. This file parses the arguments; the
sweep is llm/sweep/ (its docstring: the grid, the files, resuming, one writer).
"""
from __future__ import annotations

import argparse

from llm.scaling.laws import LAWS
from llm.shape import SHAPE_RULES
from llm.scaling.grid import DEFAULT_SPREAD_DEX, MIN_SIZES
from llm.sweep import ROOT, cli
from llm.sweep.points import EVAL_TOKENS
from typed_yaml.args import OneLineParser, positive

DEFAULT_BASE = ROOT / "configs" / "debug.yaml"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=positive, nargs="+", help="FLOP budgets C (6ND), at least two")
    p.add_argument("--sizes-per-budget", type=int, default=5, help=f"model sizes per budget (>= {MIN_SIZES})")
    p.add_argument("--spread", type=float, default=DEFAULT_SPREAD_DEX,
                   help=f"half-width of each budget's grid in log10 N (default {DEFAULT_SPREAD_DEX}: 10x end to end)")
    p.add_argument("--config", default=str(DEFAULT_BASE),
                   help="base run config: data, tokenizer, vocab_size, seq_len, precision (default configs/debug.yaml)")
    p.add_argument("--shapes", choices=sorted(SHAPE_RULES), default="standard",
                   help="shape designer rules: standard, or small (32-wide heads, for CPU-scale models; "
                        "llm/shape.py)")
    p.add_argument("--eval-tokens", type=int, default=EVAL_TOKENS,
                   help=f"held-out tokens each point is evaluated on, at most (default {EVAL_TOKENS:,})")
    p.add_argument("--seeds", type=int, default=1,
                   help="training runs per grid point, seeds from the base config's train.seed up (default 1); "
                        "the fit takes every run")
    p.add_argument("--family", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                   help="a model family: every point is trained once per family, with model.moe's KEY=VALUE settings "
                        "applied to its shape (none: dense), e.g. --family dense --family moe8 experts=8 top_k=2; "
                        "two or more, compared at equal loss (repeatable)")
    p.add_argument("--law", default="besiroglu",
                   help=f"law whose N_opt centres the grid: {', '.join(LAWS)}, or a previous sweep's law.json")
    p.add_argument("--out", required=True, help="sweep directory (rerun with the same one to resume)")
    p.add_argument("--slurm", action="store_true", help="run the points as a SLURM job array (launch/slurm/)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="OPT",
                   help="extra sbatch option for --slurm, e.g. --sbatch-arg=--partition=cpu (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="with --slurm: submit and return; rerun to collect")
    p.add_argument("--fit-only", action="store_true",
                   help="run nothing: fit, draw and report the points finished so far")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--collect-point", metavar="NAME", help=argparse.SUPPRESS)  # sweep.sbatch, after a task's run
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run(parser().parse_args(argv))


if __name__ == "__main__":
    from launch.cli import run
    run(main)
