"""How a launched rank's process ends: once it has joined a process group, by `os._exit` after flushing.

A normal interpreter exit tears the interpreter down while torch's C++ threads (gloo's work and transport
loops, DeepSpeed's groups keep their process groups alive past `destroy_process_group`) may still run. A C++
thread that then needs the GIL (to free a tensor whose Python object it kept alive) is ended by CPython with
pthread_exit, whose unwinding through a noexcept frame calls std::terminate: the rank dies with SIGABRT,
"terminate called without an active exception", after its work is done and saved (pytorch/pytorch#190489).
The deepspeed launcher then reports the finished run as failed: one rank of one launch did so in 3 of our
last 6 full test runs, and tests/parallel/test_rank_exit.py provokes it on purpose. By the time a launched
entry point returns, training has closed its files, sinks and process group, so teardown has nothing left to
do but what can abort it.

This module imports nothing heavy: a config error exits through it before torch is loaded.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def joined_process_group() -> bool:
    """Whether this process joined a process group (parallel/process_group.py's init_distributed ran)."""
    pg = sys.modules.get("parallel.process_group")
    return bool(pg is not None and pg.JOINED)


def exit_rank(code: int) -> NoReturn:
    """Exit with `code`: `sys.exit` in a process that never joined a process group, else flush and `os._exit`."""
    if not joined_process_group():
        sys.exit(code)
    logging.shutdown()  # flushes every logging handler (DeepSpeed logs through one)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it anyway
            pass
    os._exit(code)
