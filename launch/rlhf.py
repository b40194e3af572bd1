"""Run the 'ppo' stage of an alignment recipe alone (the previous stage's checkpoint must exist).

    python launch/rlhf.py --config configs/align/default.yaml [key.sub=value ...]
    deepspeed --num_gpus N launch/rlhf.py --config configs/align/default.yaml [...]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.align_common import main_for  # noqa: E402

if __name__ == "__main__":
    from parallel.rank_exit import exit_rank
    exit_rank(main_for("ppo", __doc__))
