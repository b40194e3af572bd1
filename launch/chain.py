"""Run the alignment chain of a recipe: pretrained base → SFT → reward model → PPO (or DPO).

    python launch/chain.py --config configs/align/default.yaml [key.sub=value ...]            # debug mode
    deepspeed --num_gpus N launch/chain.py --config configs/align/default.yaml [...]         # data-parallel stages

Stages whose checkpoint exists are skipped; <out_dir>/chain_report.json gets every stage's metrics.
Before the first stage trains, every data file and reward function each stage will read is checked as that stage
reads it (llm/align/chain.py), so a mistake in a later stage's input costs no training.
A config mistake prints one line and exits 2 ("config error: stage rm: rm.data: pairs.jsonl:3: missing 'chosen' ...");
a checkpoint mismatch between stages exits 4.
"""
from __future__ import annotations

from launch.align_common import main_for


def main(argv=None) -> int:
    return main_for("chain", __doc__, argv)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
