"""Run the 'ppo' stage (PPO against the reward model) of an alignment recipe alone (the SFT and RM checkpoints must
exist).

    python launch/ppo.py --config configs/align/default.yaml [key.sub=value ...]
    deepspeed --num_gpus N launch/ppo.py --config configs/align/default.yaml [...]
"""
from __future__ import annotations

from launch.align_common import main_for


def main(argv=None) -> int:
    return main_for("ppo", __doc__, argv)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
