"""Run the 'rm' stage (reward-model training) of an alignment recipe alone (the SFT checkpoint must exist).

    python launch/rm.py --config configs/align/default.yaml [key.sub=value ...]
    deepspeed --num_gpus N launch/rm.py --config configs/align/default.yaml [...]
"""
from __future__ import annotations

from launch.align_common import main_for


def main(argv=None) -> int:
    return main_for("rm", __doc__, argv)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
