"""A launched rank ends by os._exit once it joined a process group (parallel/rank_exit.py), without losing output.

Each case is a real child process: one joins a one-rank gloo group through init_distributed (the path every
launched entry point takes), the other never joins. Both print a partial line into a pipe (block-buffered, so
only a flush gets it out) and register an atexit hook; the hook running or not tells which exit was taken.

The joined child also leaves gloo work in flight on tensors whose Python objects it dropped: that is what made a
finished rank die at interpreter teardown with SIGABRT, "terminate called without an active exception" (a gloo
thread freeing such a tensor needs the GIL while the interpreter is finalizing). With a plain sys.exit this child
aborted in 3 of 3 runs here (exit -6); exit_rank must give its code.
"""
import subprocess
import sys

from tests.parallel.launcher_utils import ROOT, free_port, launch_env

CHILD = """
import atexit, sys
atexit.register(lambda: print("[teardown ran]"))
if sys.argv[1] == "join":
    from parallel.launch_env import LaunchEnv
    from parallel.process_group import init_distributed
    init_distributed(LaunchEnv("torchrun", 0, 1, 0))
    import torch, torch.distributed as dist
    for _ in range(3):
        dist.all_reduce(torch.ones(25_000_000), async_op=True)  # handle and tensor dropped at once
print("last words", end="")
from parallel.rank_exit import exit_rank
exit_rank(5)
"""


def _child(mode: str) -> subprocess.CompletedProcess:
    env = launch_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": str(free_port())})
    env.pop("PYTHONUNBUFFERED")
    return subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_rank_that_joined_skips_teardown_and_keeps_its_output_and_code():
    proc = _child("join")
    assert proc.returncode == 5, proc.stderr[-2000:]  # not -6 (SIGABRT at teardown)
    assert proc.stdout.endswith("last words"), proc.stdout[-500:]  # flushed before os._exit
    assert "[teardown ran]" not in proc.stdout


def test_a_process_that_never_joined_exits_normally():
    proc = _child("plain")
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert proc.stdout == "last words[teardown ran]\n"
