"""How this process was started, read from the environment the launcher left.

- `deepspeed` / `torchrun`: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT are set by the launcher.
- `srun` (one task per GPU): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the master is the first host of
  SLURM_JOB_NODELIST as `scontrol show hostnames` expands it. We export the torch.distributed variables.
- plain `python`: none of those; single-process debug mode.
"""
from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

from llm.config import ConfigError


@dataclass
class LaunchEnv:
    mode: str
    """'python', 'deepspeed', 'torchrun' or 'srun'."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def slurm_hostnames(nodelist: str) -> list[str]:
    """SLURM_JOB_NODELIST ('gpu[01-03],cpu7') expanded by `scontrol show hostnames`, in allocation order."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r} with scontrol: {e}") from None
    if not out:
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r} expands to no host")
    return out


def first_slurm_host(nodelist: str) -> str:
    """The master: the allocation's first host, which must resolve."""
    try:
        out = slurm_hostnames(nodelist)
    except ConfigError as e:
        raise ConfigError(f"cannot resolve the master host: {e}") from None
    try:
        socket.getaddrinfo(out[0], None)
    except OSError as e:
        raise ConfigError(f"master host {out[0]!r} (first of SLURM_JOB_NODELIST={nodelist!r}) does not resolve: "
                          f"{e}") from None
    return out[0]


def _from_slurm(env) -> LaunchEnv:
    try:
        rank, world, local = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"inconsistent SLURM environment: {e}") from None
    if not 0 <= rank < world:
        raise ConfigError(f"SLURM_PROCID={rank} is outside SLURM_NTASKS={world}")
    per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
    gpus = env.get("SLURM_GPUS_ON_NODE")
    if per_node.isdigit() and gpus and gpus.isdigit() and int(gpus) > 0 and int(per_node) != int(gpus):
        raise ConfigError(f"SLURM_NTASKS_PER_NODE={per_node} but SLURM_GPUS_ON_NODE={gpus}: "
                          "start one task per GPU (sbatch --ntasks-per-node equal to --gpus-per-node)")
    if "MASTER_ADDR" not in os.environ:  # an explicit master is kept, and the node list not even looked up
        os.environ["MASTER_ADDR"] = (first_slurm_host(env["SLURM_JOB_NODELIST"]) if "SLURM_JOB_NODELIST" in env
                                     else "127.0.0.1")
    # A port derived from the job id lets two jobs share a node without colliding.
    os.environ.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
    return LaunchEnv("srun", rank, world, local)


def detect_launch(env=None) -> LaunchEnv:
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        mode = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "deepspeed"
        return LaunchEnv(mode, int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    # srun sets SLURM_STEP_ID for job steps; a bare sbatch script (one process) stays in debug mode.
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return _from_slurm(env)
    return LaunchEnv("python")
