"""The peak FLOP/s that MFU is measured against, agreed by every rank of a launched job."""
from __future__ import annotations

import torch

from parallel.launch_env import LaunchEnv
from parallel.process_group import cpu_cores


def device_peak_flops(device: torch.device, precision: str, launch: LaunchEnv) -> tuple[float, str]:
    """Peak FLOP/s of one device for MFU. On CPU, each node's local rank 0 times matmuls on all the node's cores
    while the other ranks wait (ranks measuring at once would each see a fraction), and all ranks take the result."""
    import torch.distributed as dist
    from llm.train.hardware import peak_flops
    if device.type != "cpu":
        return peak_flops(device, precision)
    value = torch.zeros(1, dtype=torch.float64)
    source = ""
    dist.barrier()
    if launch.local_rank == 0:
        threads = torch.get_num_threads()
        torch.set_num_threads(cpu_cores())
        peak, source = peak_flops(device, precision)
        torch.set_num_threads(threads)
        value[0] = peak
    dist.barrier()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item()), source or "measured on CPU by local rank 0"
