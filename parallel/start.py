"""The start-up of a launched job (deepspeed, torchrun or srun): validate the layout, join the process group,
build the topology, then the start-up sequence every run shares (llm/train/start.py) over a DeepSpeed backend."""
from __future__ import annotations

import json
import socket
from pathlib import Path

from llm.config import RunConfig
from llm.train import start
from llm.train.loop import TrainOutcome
from parallel.engine import DeepSpeedBackend
from parallel.launch_env import LaunchEnv
from parallel.peak import device_peak_flops
from parallel.process_group import init_distributed, local_world_size
from parallel.topology import Topology, check_layout


def run_distributed(cfg: RunConfig, launch: LaunchEnv, eval_only: bool = False) -> TrainOutcome:
    """Train (or evaluate) `cfg` as rank launch.rank of launch.world_size; every rank calls it.

    Raises ConfigError for a layout, batch or parallel.deepspeed mistake before any process group exists.
    """
    import torch.distributed as dist

    tp, pp, dp = check_layout(cfg, launch.world_size)  # before init, so a layout error costs no rendezvous
    device = init_distributed(launch)
    topo = Topology(tp, pp, dp)
    print(f"rank {launch.rank} on {socket.gethostname()}: local rank {launch.local_rank}, device {device}, "
          f"{topo.coords()}", flush=True)

    def announce(backend: DeepSpeedBackend, peak: float, source: str) -> None:
        if launch.rank != 0:
            return
        (Path(cfg.out_dir) / "deepspeed_config.json").write_text(json.dumps(backend.ds_config, indent=1))
        print(f"layout tp={tp} pp={pp} dp={dp} zero={cfg.parallel.zero_stage} precision={cfg.precision.dtype}; "
              f"{cfg.total_steps} steps; MFU against {peak / 1e12:.2f} TFLOP/s per device ({source})", flush=True)

    # On CPU a node's ranks share its cores, so the peak is per node (measured with all its cores).
    n_devices = launch.world_size if device.type == "cuda" else max(1, launch.world_size // local_world_size(launch))
    outcome = start.run(cfg, lambda: DeepSpeedBackend(cfg, topo, device),
                        lambda: device_peak_flops(device, cfg.precision.dtype, launch), announce,
                        is_main=launch.rank == 0, n_devices=n_devices, log=print, eval_only=eval_only)
    dist.barrier()
    dist.destroy_process_group()
    return outcome
