"""Measure per-rank model-state bytes under ZeRO 0-3 in one launch (see llm/cost/zero.py and parallel/memory.py).

    deepspeed --num_gpus N tests/parallel/zero_memory_probe.py OUT.json [--stages 0 1 2 3]

On every rank, for each stage in turn: build llm/model.py's Transformer (Ψ from llm.shape.count_params) and
its engine through `DeepSpeedBackend` (so `parallel.ds_config.deepspeed_config` and `Topology` as mpu), in
bf16, with two micro-batches per step. Take one full step (Adam's moments exist from then on), then run the
next step's first micro-batch and measure ("accumulating"), its second and measure ("boundary": gradients
reduced, optimizer not yet stepped), and step. Rank 0 writes every rank's rows as JSON to OUT.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MICRO_BATCH = 2
MICRO_STEPS = 2


def probe_config(zero_stage: int, dp: int):
    """The probe's run config: Ψ = 688,768 (2 layers, d_model 128, vocab 1024), bf16, 2 micro-batches per step."""
    from llm.config import ModelConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig
    model = ModelConfig(n_layers=2, d_model=128, n_heads=4, d_ff=384, vocab_size=1024, seq_len=32)
    train = TrainConfig(max_steps=2, global_batch_size=MICRO_BATCH * MICRO_STEPS * dp, micro_batch_size=MICRO_BATCH)
    return RunConfig(model=model, train=train, parallel=ParallelConfig(zero_stage=zero_stage),
                     precision=PrecisionConfig(dtype="bf16"), out_dir="runs/zero_memory_probe")


def group_numels(cfg) -> list[list[int]]:
    """Parameter sizes of each optimizer group, as the engine receives them (parallel/engine.py)."""
    from llm.model import Transformer
    from llm.train.optim import param_groups
    return [[p.numel() for p in g["params"]] for g in param_groups(Transformer(cfg.model), cfg.optim.weight_decay)]


def measure_stage(zero_stage: int, topo, device) -> list[dict]:
    import torch
    from llm.shape import count_params
    from parallel.engine import DeepSpeedBackend
    from llm.cost.zero import deepspeed_zero_bytes, paper_zero_bytes
    from parallel.memory import measure_zero_bytes

    cfg = probe_config(zero_stage, topo.dp)
    psi = count_params(cfg.model)
    groups = group_numels(cfg)
    backend = DeepSpeedBackend(cfg, topo, device)
    engine = backend.engine
    held = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    assert held == psi, f"model has {held} parameters, llm.shape.count_params says {psi}"
    gen = torch.Generator().manual_seed(1000 + topo.dp_rank)

    def batch():
        return torch.randint(0, cfg.model.vocab_size, (MICRO_BATCH, cfg.model.seq_len + 1), generator=gen)

    backend.train_step([batch() for _ in range(MICRO_STEPS)], lr=cfg.optim.lr)
    rows = []
    for i, point in enumerate(("accumulating", "boundary")):
        b = batch()
        engine.backward(engine(b[:, :-1], targets=b[:, 1:]))
        assert engine.is_gradient_accumulation_boundary() == (i == MICRO_STEPS - 1)
        rows.append({"rank": topo.rank, "dp": topo.dp, "zero_stage": zero_stage, "point": point, "n_params": psi,
                     "optimizer_class": type(engine.optimizer).__name__,
                     "measured": measure_zero_bytes(engine).as_dict(),
                     "paper": paper_zero_bytes(psi, topo.dp, zero_stage).as_dict(),
                     "deepspeed": deepspeed_zero_bytes(groups, topo.dp, zero_stage, point == "boundary",
                                                       topo.dp_rank).as_dict(),
                     "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        engine.step()
    del backend, engine
    gc.collect()
    return rows


def write_all_ranks_rows(rows: list[dict], out: Path) -> None:
    """Gather every rank's rows to rank 0, which writes them all to `out` as JSON; then leave the process group."""
    import torch.distributed as dist
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rows)
    if dist.get_rank() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([r for rank_rows in gathered for r in rank_rows], indent=1))
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    from parallel.process_group import init_distributed
    from parallel.launch_env import detect_launch
    from parallel.topology import Topology

    launch = detect_launch()
    device = init_distributed(launch)
    topo = Topology(1, 1, launch.world_size)
    rows = [row for stage in args.stages for row in measure_stage(stage, topo, device)]
    write_all_ranks_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    from parallel.rank_exit import exit_rank
    exit_rank(main())
