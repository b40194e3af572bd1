"""Real gloo ranks on CPU for multi-process tests, started once and reused across tests.

`DistWorkers(n)` spawns n processes (torch.multiprocessing, 'spawn') that join one gloo process group through a
TCPStore the test process hosts on a free port (port 0: the OS picks it, so parallel runs never collide).
`workers.run(fn, *args)` calls fn(*args) on every rank and returns the per-rank results. fn must be a module-level
function (it is pickled by name) and should return small values (floats, dicts of floats): compare on the ranks,
assert in the test.

A rank that raises surfaces its traceback as a RankError; a rank that hangs (say, a collective its peers never
join) or dies surfaces as a TimeoutError/RankError after `timeout_s` instead of hanging the test run. Either way
the workers are torn down, and the next run() starts fresh ones, so one failing test does not fail the rest.
"""
from __future__ import annotations

import atexit
import os
import queue
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class RankError(RuntimeError):
    pass


def _worker(rank: int, world_size: int, port: int, tasks, results, timeout_s: float) -> None:
    torch.set_num_threads(1)  # n ranks share the machine's few cores
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["LOCAL_RANK"] = str(rank)  # DeepSpeed's PipelineModule reads it
    try:
        store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=timeout_s))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
        return
    results.put((rank, True, "ready"))
    while (task := tasks.get()) is not None:
        fn, args = task
        try:
            results.put((rank, True, fn(*args)))
        except BaseException:
            results.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class DistWorkers:
    def __init__(self, world_size: int, timeout_s: float = 60.0, startup_timeout_s: float = 180.0):
        self.world_size, self.timeout_s, self.startup_timeout_s = world_size, timeout_s, startup_timeout_s
        self._procs = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        # The store lives in this process; port 0 lets the OS pick a free port.
        self._store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                                    timeout=timedelta(seconds=self.timeout_s))
        self._tasks = [ctx.Queue() for _ in range(self.world_size)]
        self._results = ctx.Queue()
        self._procs = [ctx.Process(target=_worker, daemon=True,
                                   args=(r, self.world_size, self._store.port, self._tasks[r], self._results,
                                         self.timeout_s))
                       for r in range(self.world_size)]
        for p in self._procs:
            p.start()
        # Starting (spawn, import torch, join the group) takes seconds per rank; it is not part of a run's timeout.
        self._collect("start-up", self.startup_timeout_s)

    def _collect(self, what: str, timeout_s: float) -> list:
        """One result per rank, or RankError/TimeoutError (after tearing the workers down)."""
        deadline = time.monotonic() + timeout_s
        out = {}
        while len(out) < self.world_size:
            try:
                rank, ok, value = self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(self._procs) if not p.is_alive() and r not in out]
                if dead or time.monotonic() > deadline:
                    missing = sorted(set(range(self.world_size)) - set(out))
                    self.close()
                    if dead:
                        raise RankError(f"{what} on {self.world_size} ranks: ranks {dead} died") from None
                    raise TimeoutError(f"{what} on {self.world_size} ranks: ranks {missing} did not finish "
                                       f"within {timeout_s}s") from None
                continue
            if not ok:
                self.close()
                raise RankError(f"{what} failed on rank {rank} of {self.world_size}:\n{value}")
            out[rank] = value
        return [out[r] for r in range(self.world_size)]

    def run(self, fn, *args, timeout_s: float | None = None) -> list:
        """fn(*args) on every rank; returns [result of rank 0, rank 1, ...]."""
        if self._procs is None:
            self._start()
        for q in self._tasks:
            q.put((fn, args))
        return self._collect(fn.__name__, timeout_s or self.timeout_s)

    def close(self) -> None:
        if self._procs is None:
            return
        for r, p in enumerate(self._procs):
            if p.is_alive():
                self._tasks[r].put(None)
        deadline = time.monotonic() + 5.0  # ranks stuck in a collective never read the stop message
        for p in self._procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        self._procs = None
        self._store = None


_shared: dict[int, DistWorkers] = {}


def shared_workers(world_size: int) -> DistWorkers:
    """One DistWorkers per world size for the whole test session (spawning and importing torch and DeepSpeed costs
    seconds per rank), closed when the interpreter exits."""
    if not _shared:
        atexit.register(lambda: [w.close() for w in _shared.values()])
    if world_size not in _shared:
        _shared[world_size] = DistWorkers(world_size)
    return _shared[world_size]
