"""Rank-aware console output, for every layer: the one place that decides which rank of a job speaks.

In a job of N ranks most lines (progress, a stage's summary, a warning about the run) are the same on every rank and
should be printed once, by the main rank; a few (where this rank runs, what it holds, why it stopped) differ per rank
and are printed by each, with the rank in front. `info` and `warning` are the first kind, `every_rank` the second.
Nothing else in the tree compares a rank with 0 to decide whether to print (the ranks that write shared files still
ask their backend's `is_main`: that is about files, not the console).

The rank is the one `set_rank` was given (parallel/process_group.py's `init_distributed`, through which every
launched rank joins the job, calls it), else the launcher's RANK variable (`deepspeed`, `torchrun`, and `srun` through
parallel/launch_env.py, which exports it), else 0: a plain `python` process is the main rank of a job of one.

Lines go to standard output through print, flushed at once, so a launcher's or srun's merged pipes keep each line
whole and in order, and pytest's capsys sees them. Python's `logging` is not used: its handlers bind sys.stdout when
made, and its level and handler configuration would be one more thing for a user's own code to collide with.
"""
from __future__ import annotations

import os

_rank: int | None = None


def set_rank(rank: int) -> None:
    """This process's global rank, once known (overrides the environment)."""
    global _rank
    _rank = int(rank)


def rank() -> int:
    """This process's global rank: set_rank's, else $RANK, else 0."""
    if _rank is not None:
        return _rank
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """True on the rank that prints the job's shared lines (rank 0)."""
    return rank() == 0


def info(message: str) -> None:
    """A line of the job's output, printed once: by the main rank only."""
    if is_main():
        print(message, flush=True)


def warning(message: str) -> None:
    """A warning about the run, printed once, as "warning: <message>"."""
    info(f"warning: {message}")


def every_rank(message: str) -> None:
    """A line about this rank, printed by every rank as "rank R: <message>"."""
    print(f"rank {rank()}: {message}", flush=True)
