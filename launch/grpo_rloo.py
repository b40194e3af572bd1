"""Run the 'grpo_rloo' stage (GRPO or RLOO, grpo_rloo.algorithm) of an alignment recipe alone (the SFT checkpoint must
exist).

    python launch/grpo_rloo.py --config configs/align/default.yaml [key.sub=value ...]
    deepspeed --num_gpus N launch/grpo_rloo.py --config configs/align/default.yaml [...]
"""
from __future__ import annotations

from launch.align_common import main_for


def main(argv=None) -> int:
    return main_for("grpo_rloo", __doc__, argv)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
