"""Run the 'rl' stage (GRPO or RLOO, rl.algorithm) of an alignment recipe alone (the SFT checkpoint must exist).

    python launch/rl.py --config configs/align/default.yaml [key.sub=value ...]
    deepspeed --num_gpus N launch/rl.py --config configs/align/default.yaml [...]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.align_common import main_for  # noqa: E402

if __name__ == "__main__":
    from parallel.rank_exit import exit_rank
    exit_rank(main_for("rl", __doc__))
