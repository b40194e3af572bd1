"""A DeepSpeed hostfile for the current SLURM allocation, and its master host.

    python launch/slurm/hostfile.py > hostfile          # one "HOST slots=N" line per node of the job
    python launch/slurm/hostfile.py --slots 8           # N fixed (e.g. GPUs per node) instead of tasks per node
    python launch/slurm/hostfile.py --master            # the first host (where rank 0 and the rendezvous live)

Hosts come from SLURM_JOB_NODELIST expanded by `scontrol show hostnames`, in allocation order; slots from
SLURM_TASKS_PER_NODE (SLURM's compressed form, "8(x2),4" = 8, 8, 4) unless --slots is given. Used by
launch/slurm/common.sh for the one-task-per-node DeepSpeed launcher mode. Exits 2 with one line on stderr
when the environment is not a usable allocation.
"""
from __future__ import annotations

import argparse
import os
import socket

from llm.config import ConfigError
from parallel.launch_env import slurm_hostnames
from typed_yaml.errors import UserError


class AllocationError(UserError, RuntimeError):
    """The SLURM environment does not describe a usable allocation (exit 2, one line: launch/cli.py)."""


def hostnames(nodelist: str) -> list[str]:
    """SLURM_JOB_NODELIST expanded by `scontrol show hostnames` (parallel/launch_env.py), in order."""
    try:
        return slurm_hostnames(nodelist)
    except ConfigError as e:
        raise AllocationError(str(e)) from None


def tasks_per_node(compressed: str) -> list[int]:
    """SLURM_TASKS_PER_NODE's compressed form expanded: '8(x2),4' -> [8, 8, 4]."""
    counts = []
    for part in compressed.split(","):
        value, _, repeat = part.partition("(x")
        try:
            counts += [int(value)] * (int(repeat.rstrip(")")) if repeat else 1)
        except ValueError:
            raise AllocationError(f"cannot parse SLURM_TASKS_PER_NODE={compressed!r}") from None
    return counts


def hostfile_lines(env, slots: int | None = None) -> list[str]:
    """'HOST slots=N' for every node of the allocation described by `env` (a mapping like os.environ)."""
    if "SLURM_JOB_NODELIST" not in env:
        raise AllocationError("SLURM_JOB_NODELIST is not set: run this inside a SLURM allocation (sbatch/salloc)")
    hosts = hostnames(env["SLURM_JOB_NODELIST"])
    if slots is not None:
        counts = [slots] * len(hosts)
    elif "SLURM_TASKS_PER_NODE" in env:
        counts = tasks_per_node(env["SLURM_TASKS_PER_NODE"])
    else:
        raise AllocationError("SLURM_TASKS_PER_NODE is not set: pass --slots")
    if len(counts) != len(hosts):
        raise AllocationError(f"SLURM_TASKS_PER_NODE={env.get('SLURM_TASKS_PER_NODE')!r} names {len(counts)} nodes "
                              f"but SLURM_JOB_NODELIST={env['SLURM_JOB_NODELIST']!r} has {len(hosts)}")
    if min(counts) < 1:
        raise AllocationError(f"every node needs at least one slot, got {counts}")
    return [f"{h} slots={n}" for h, n in zip(hosts, counts)]


def master_host(env) -> str:
    """The first host of the allocation, checked to resolve (the rendezvous address of every rank)."""
    if "SLURM_JOB_NODELIST" not in env:
        raise AllocationError("SLURM_JOB_NODELIST is not set: run this inside a SLURM allocation (sbatch/salloc)")
    host = hostnames(env["SLURM_JOB_NODELIST"])[0]
    try:
        socket.getaddrinfo(host, None)
    except OSError as e:
        raise AllocationError(f"master host {host!r} (first of SLURM_JOB_NODELIST) does not resolve: {e}") from None
    return host


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=None, help="slots per node (default: SLURM_TASKS_PER_NODE)")
    ap.add_argument("--master", action="store_true", help="print the master host instead of the hostfile")
    args = ap.parse_args(argv)
    print(master_host(os.environ) if args.master else "\n".join(hostfile_lines(os.environ, args.slots)))
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
