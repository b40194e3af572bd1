"""Plot pretraining runs, or an alignment chain's report, as one PNG.

    python launch/plot.py runs/debug runs/debug_bf16 --out curves.png    # runs overlaid, one legend entry each
    python launch/plot.py --chain runs/align --out chain.png              # <out_dir>/chain_report.json
    python launch/plot.py runs/moe --routing --out routing.png            # an MoE run's expert load over steps

Runs: loss and eval loss against tokens (log-log: the power law of the scaling papers is a straight line
there), the learning rate, throughput and MFU against step, from each RUN_DIR/metrics.jsonl. Chain: every
stage's scores from chain_report.json (written by llm/align/chain.py). Any user error prints one line and
exits with status 2.
"""
from __future__ import annotations

from pathlib import Path

from typed_yaml.args import OneLineParser
from llm.train.plots import UserError, check_out, plot_chain, plot_runs
from typed_yaml import log


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="out_dir of a pretraining run")
    ap.add_argument("--chain", type=Path, metavar="CHAIN_OUT_DIR", help="out_dir of launch/chain.py")
    ap.add_argument("--routing", action="store_true",
                    help="one MoE run's expert load per layer and router entropy over the steps")
    ap.add_argument("--out", type=Path, required=True, help="image to write, e.g. curves.png")
    args = ap.parse_args(argv)
    if bool(args.runs) == bool(args.chain):
        ap.error("give one or more RUN_DIRs, or --chain CHAIN_OUT_DIR (not both)")
    if args.routing and len(args.runs) != 1:
        ap.error("--routing draws one run: give exactly one RUN_DIR")
    check_out(args.out)
    if args.routing:
        from llm.train.routing_plot import plot_routing
        fig = plot_routing(args.runs[0])
    else:
        fig = plot_chain(args.chain) if args.chain else plot_runs(args.runs)
    try:
        fig.savefig(args.out)
    except OSError as e:
        raise UserError(f"--out {args.out}: {e.strerror or e}") from None
    log.info(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
