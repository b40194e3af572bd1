"""Run the 'rl' stage (GRPO or RLOO, rl.algorithm) of an alignment recipe alone (the SFT checkpoint must exist).

    python launch/rl.py --config configs/align/default.yaml [key.sub=value ...]
    deepspeed --num_gpus N launch/rl.py --config configs/align/default.yaml [...]
"""
from __future__ import annotations

from launch.align_common import main_for


def main(argv=None) -> int:
    return main_for("rl", __doc__, argv)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
