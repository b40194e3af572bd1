"""The process group of a launched job: NCCL on CUDA, gloo with DeepSpeed's CPU accelerator otherwise, and the
CPU threads each rank may use."""
from __future__ import annotations

import os

import torch

from parallel.launch_env import LaunchEnv
from typed_yaml import log

JOINED = False
"""Set once init_distributed has joined the job's process group; parallel/rank_exit.py reads it."""


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_world_size(launch: LaunchEnv) -> int:
    """Ranks on this node: DeepSpeed's launcher sets LOCAL_SIZE, torchrun LOCAL_WORLD_SIZE, srun a per-node count."""
    for key in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
    return int(per_node) if per_node.isdigit() else launch.world_size


def init_distributed(launch: LaunchEnv) -> torch.device:
    """NCCL on CUDA, gloo with DeepSpeed's CPU accelerator otherwise (chosen before deepspeed is imported). Fixes
    this process's rank for typed_yaml/log.py, so its lines are the main rank's only whoever joins the group."""
    log.set_rank(launch.rank)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # Ranks on one CPU node share its cores; torch's default of all cores per rank oversubscribes them
        # (configs/debug.yaml, DP2 on 2 cores: 657 tokens/s with 2 threads per rank, 4,800 with 1).
        torch.set_num_threads(max(1, cpu_cores() // local_world_size(launch)))
    if torch.cuda.is_available():
        device = torch.device("cuda", launch.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        device, backend = torch.device("cpu"), "gloo"
    import deepspeed
    if backend == "gloo":
        from parallel.ds_cpu import skip_shm_allreduce
        skip_shm_allreduce()
    try:
        deepspeed.init_distributed(dist_backend=backend)
    except torch.distributed.DistNetworkError as e:
        if "EADDRINUSE" not in str(e):
            raise
        from llm.config import ConfigError
        port = os.environ.get("MASTER_PORT", "?")
        raise ConfigError(f"the rendezvous port {port} on {os.environ.get('MASTER_ADDR', 'localhost')} is already in "
                          f"use (another job?): pick a free one with `deepspeed --master_port PORT ...` (torchrun: "
                          f"--master_port; srun: MASTER_PORT)") from None
    global JOINED
    JOINED = True
    log.info(f"distributed: {launch.mode}, backend {backend}, world size {launch.world_size}"
             + (" (no CUDA: DeepSpeed CPU accelerator, gloo)" if backend == "gloo" else ""))
    return device
