"""Shared command line of the alignment entry points (launch/{sft,reward,rlhf,dpo,chain}.py).

Each takes `--config RECIPE.yaml` plus dotted overrides, runs in debug mode under plain `python` and
data-parallel under the `deepspeed` launcher (detected from the environment, parallel/launch_env.py).
Exit codes: 0 done, 2 config error, 4 hand-off error (a checkpoint that does not fit the stage).
"""
from __future__ import annotations

import argparse
import sys


def _stage_fn(name: str):
    if name == "chain":
        from llm.align.chain import run_chain
        return run_chain
    if name == "sft":
        from llm.align.sft import run_sft
        return run_sft
    if name == "rm":
        from llm.align.rm import run_rm
        return run_rm
    if name == "ppo":
        from llm.align.ppo import run_ppo
        return run_ppo
    from llm.align.dpo import run_dpo
    return run_dpo


def main_for(name: str, doc: str, argv=None) -> int:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="alignment recipe, e.g. configs/align/default.yaml")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ppo.beta=0.1 sft.steps=100")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from llm.align.config import load_align_config
    from llm.align.handoff import HandoffError
    from llm.config import ConfigError
    try:
        cfg = load_align_config(args.config, args.overrides)
        from llm.align.engine import setup_dist
        dist = setup_dist()
        _stage_fn(name)(cfg, dist, print)
        dist.close()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except HandoffError as e:
        print(f"hand-off error: {e}", file=sys.stderr)
        return 4
    return 0
