"""The start-up of a launched job (deepspeed, torchrun or srun): validate the layout, join the process group,
build the topology, then the start-up sequence every run shares (llm/train/start.py) over a DeepSpeed backend."""
from __future__ import annotations

import json
import socket
from pathlib import Path

from llm.config import ConfigError, RunConfig
from llm.train import start
from llm.train.loop import TrainOutcome
from llm.train.memory_watch import MemoryWatch, predict_run_memory, run_layout
from llm.train.setup import lock_error
from parallel.engine import DeepSpeedBackend
from parallel.launch_env import LaunchEnv
from parallel.peak import device_peak_flops
from parallel.process_group import init_distributed, local_world_size
from parallel.topology import Topology, check_layout
from typed_yaml import log


def run_distributed(cfg: RunConfig, launch: LaunchEnv, eval_only: bool = False) -> TrainOutcome:
    """Train (or evaluate) `cfg` as rank launch.rank of launch.world_size; every rank calls it.

    Raises ConfigError for a layout, batch or parallel.deepspeed mistake before any process group exists.
    """
    import torch.distributed as dist

    tp, pp, dp = check_layout(cfg, launch.world_size)  # before init, so a layout error costs no rendezvous
    device = init_distributed(launch)
    # One writer per run: rank 0 locks out_dir, and every rank hears its verdict (llm/train/setup.py lock_run).
    verdict = [lock_error(cfg) if launch.rank == 0 else None]
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0]:
        raise ConfigError(verdict[0])
    topo = Topology(tp, pp, dp, cp=cfg.parallel.context)
    log.every_rank(f"host {socket.gethostname()}, local rank {launch.local_rank}, device {device}, {topo.coords()}")

    predicted = predict_run_memory(cfg, dp, device)
    watch = MemoryWatch(predicted.tensors, device)

    def announce(backend: DeepSpeedBackend, peak: float, source: str) -> None:
        if backend.is_main:
            (Path(cfg.out_dir) / "deepspeed_config.json").write_text(json.dumps(backend.ds_config, indent=1))
        cp = f"cp={topo.cp} " if topo.cp > 1 else ""
        log.info(f"layout tp={tp} pp={pp} {cp}dp={dp} zero={cfg.parallel.zero_stage} precision={cfg.precision.dtype}; "
                 f"{cfg.total_steps} steps; MFU against {peak / 1e12:.2f} TFLOP/s per device ({source})")
        # On CPU the unfilled part of DeepSpeed's full-size buckets is never paged in (llm/cost/memory.py), so the
        # headline there is what the rank's resident memory will hold; a GPU's allocator reserves all of it.
        head = predicted.tensors if device.type == "cuda" else predicted.resident
        log.info(f"predicted peak memory per rank {head / 1e9:.3f} GB{'' if device.type == 'cuda' else ' resident'} "
                 f"(llm/cost/memory.py: "
                 + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in predicted.as_dict().items()
                             if k not in ("tensors", "total", "allowance", "stage") and v)
                 + f"); {_predicted_step(cfg, dp, device, launch)}")

    # On CPU a node's ranks share its cores, so the peak is per node (measured with all its cores).
    n_devices = launch.world_size if device.type == "cuda" else max(1, launch.world_size // local_world_size(launch))
    outcome = start.run(cfg, lambda: DeepSpeedBackend(cfg, topo, device),
                        lambda: device_peak_flops(device, cfg.precision.dtype, launch), announce,
                        is_main=launch.rank == 0, n_devices=n_devices, eval_only=eval_only,
                        memory=watch)
    _report_worst_peak(cfg, watch, launch.rank)
    dist.barrier()
    dist.destroy_process_group()
    return outcome


def _predicted_step(cfg: RunConfig, dp: int, device, launch: LaunchEnv) -> str:
    """The start-up line's step-time part: llm/cost/step_time.py's prediction where the GPU is in its tables."""
    import torch

    from llm.cost.step_time import step_time
    from llm.train.hardware import accelerator_key
    key = accelerator_key(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if key is None:
        return f"no step-time prediction for {device.type} (llm/cost/step_time.py lists GPUs only)"
    try:
        t = step_time(cfg.model, run_layout(cfg, dp), cfg.train.global_batch_size, key, local_world_size(launch))
    except ValueError as e:
        return f"no step-time prediction: {e}"
    return f"predicted step time {t.total_s:.3g} s on {key} ({t.compute_s:.3g} s compute)"


def _report_worst_peak(cfg: RunConfig, watch: MemoryWatch, rank: int) -> None:
    """Every rank's measured peak (GPU only), the worst printed by the main rank and written by rank 0 (the run's
    one writer) to <out_dir>/memory.json."""
    import torch.distributed as dist

    peaks = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, watch.peak_bytes())
    known = [p for p in peaks if p is not None]
    worst = max(known) if known else None
    if rank == 0:
        (Path(cfg.out_dir) / "memory.json").write_text(json.dumps(
            {"memory_predicted_bytes": watch.predicted_bytes, "memory_peak_bytes_by_rank": peaks,
             "memory_peak_bytes_worst_rank": worst}))
    measured = "not measured on CPU" if worst is None else f"worst rank's peak {worst / 1e9:.3f} GB"
    log.info(f"memory: predicted {watch.predicted_bytes / 1e9:.3f} GB per rank, {measured}")
