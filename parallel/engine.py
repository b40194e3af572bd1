"""Turn a model and a layout into a DeepSpeed engine, and drive it through the shared training loop.

The one place that calls `deepspeed.initialize`. Order of wrapping (torchtitan's documented order):
tensor parallelism (swap layers, slice weights) → activation checkpointing → pipeline stages →
DeepSpeed (ZeRO sharding, mixed precision, gradient accumulation over the data-parallel group).
"""
from __future__ import annotations

import socket
from pathlib import Path

import torch

from llm.config import RunConfig
from llm.train.backend import StepResult, first_nonfinite
from llm.train.optim import param_groups
from llm.train.loop import TrainOutcome, train
from parallel.launch_env import LaunchEnv
from parallel.peak import device_peak_flops
from parallel.process_group import init_distributed, local_world_size


def apply_activation_checkpointing(model: torch.nn.Module, every_k: int) -> None:
    """Recompute every k-th block in the backward pass (non-reentrant torch.utils.checkpoint).

    The forward is overridden on the instance rather than wrapped in a new module, so parameter names
    and state dicts stay those of llm/model.py.
    """
    from torch.utils.checkpoint import checkpoint

    for i, block in enumerate(model.layers):
        if i % every_k:
            continue
        plain = block.forward

        def forward(x, cache=None, start_pos=0, _plain=plain):
            if cache is None and torch.is_grad_enabled():
                return checkpoint(_plain, x, use_reentrant=False)
            return _plain(x, cache, start_pos)

        block.forward = forward


class DeepSpeedBackend:
    """Backend of llm/train/loop.py over a DeepSpeed engine (plain or pipeline)."""

    def __init__(self, cfg: RunConfig, topo, device: torch.device):
        import torch.distributed as dist
        from parallel.ds_config import deepspeed_config

        self.cfg, self.topo, self.device, self.dist = cfg, topo, device, dist
        self.rank = dist.get_rank()
        self.dp_rank, self.dp_size = topo.dp_rank, topo.dp
        self.pipelined = topo.pp > 1
        self.layout = {"backend": "deepspeed", "tp": topo.tp, "pp": topo.pp, "dp": topo.dp,
                       "zero_stage": cfg.parallel.zero_stage}
        self.ds_config = deepspeed_config(cfg, topo.dp)
        # checkpoint.reshard: a checkpoint of another layout is resumed through DeepSpeed's universal format,
        # which deepspeed.initialize must be told about (parallel/universal.py).
        from parallel.universal import can_reshard, reshard_source
        self.can_reshard, self.reshard_from = can_reshard, reshard_source(cfg, self.layout)
        if self.reshard_from is not None:
            self.ds_config.setdefault("checkpoint", {})["load_universal"] = True
        if self.pipelined:
            from parallel.pipeline import build_pipeline_module
            model = build_pipeline_module(cfg, topo)
            mpu = None  # the pipeline engine builds its grid from the module's topology
        else:
            from llm.model import Transformer
            model = Transformer(cfg.model, seed=cfg.train.seed)
            if topo.tp > 1:
                from parallel.tensor import apply_tensor_parallel
                apply_tensor_parallel(model, topo, sequence_parallel=cfg.parallel.sequence_parallel)
            ac = cfg.parallel.activation_checkpointing
            if ac != "none":
                apply_activation_checkpointing(model, 1 if ac == "full" else cfg.parallel.checkpoint_every_k)
            mpu = topo
        if cfg.checkpoint.init_from:
            from llm.train.checkpoint import read_model_weights
            from parallel.consolidate import load_full_state_dict
            load_full_state_dict(model, read_model_weights(cfg.checkpoint.init_from), topo, self.pipelined)
        # Partition patterns for DeepSpeed's universal checkpoint (ds_to_universal), saved with every checkpoint.
        from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO
        from parallel.tensor import universal_checkpoint_info
        setattr(model, UNIVERSAL_CHECKPOINT_INFO, universal_checkpoint_info(cfg.model))
        self.model = model
        self.engine = initialize_engine(model, self.ds_config, mpu)
        self.is_main = self.rank == 0

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.engine.module]

    def _dp_mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t, group=self.topo.dp_group)
        return float(t.item()) / self.dp_size

    def any_rank(self, flag: bool) -> bool:
        t = torch.tensor([int(flag)], device=self.device)
        self.dist.all_reduce(t)
        return bool(t.item())

    @property
    def _engine_keeps_no_norm(self) -> bool:
        # DeepSpeed records the global norm in its ZeRO and mixed-precision optimizers, not for plain fp32 ZeRO-0.
        return self.cfg.parallel.zero_stage == 0 and self.cfg.precision.dtype == "fp32"

    def _grad_norm(self) -> float:
        """Global L2 norm of the (TP-sharded) gradients: replicated tensors counted once, shards summed over TP."""
        sq = torch.zeros(1, dtype=torch.float64, device=self.device)
        for p in self.engine.module.parameters():
            if p.grad is not None and (self.topo.tp_rank == 0 or getattr(p, "tensor_model_parallel", False)):
                sq += p.grad.detach().double().pow(2).sum()
        if self.topo.tp > 1:
            self.dist.all_reduce(sq, group=self.topo.tp_group)
        return float(sq.sqrt().item())

    def _set_lr(self, lr: float) -> None:
        for g in self.engine.optimizer.param_groups:
            g["lr"] = lr

    def _loss_scale(self) -> float | None:
        if self.cfg.precision.dtype != "fp16":
            return None
        opt = self.engine.optimizer
        return float(getattr(opt, "cur_scale", getattr(opt, "loss_scale", 0.0)))

    def train_step(self, micro_batches: list[torch.Tensor], lr: float) -> StepResult:
        self._set_lr(lr)
        skipped_before = self.engine.skipped_steps
        scale = self._loss_scale()
        self.engine.train()
        if self.pipelined:
            it = iter([(b[:, :-1].to(self.device), b[:, 1:].to(self.device)) for b in micro_batches])
            loss = float(self.engine.train_batch(data_iter=it))  # already averaged over micro-batches and DP
        else:
            total, own_norm = 0.0, None
            for i, b in enumerate(micro_batches):
                b = b.to(self.device)
                loss_t = self.engine.module.loss_fn(self.engine(b[:, :-1]), b[:, 1:])
                self.engine.backward(loss_t)
                if i == len(micro_batches) - 1 and self._engine_keeps_no_norm:
                    own_norm = self._grad_norm()  # gradients are DP-averaged by now, not yet clipped
                self.engine.step()  # DeepSpeed steps only at the accumulation boundary
                total += loss_t.item()
            loss = self._dp_mean(total / len(micro_batches))
        norm = self.engine.get_global_grad_norm()
        if norm is None and not self.pipelined:
            norm = own_norm
        # None (not logged) for fp32 ZeRO-0 pipelines: DeepSpeed clips there inside train_batch and keeps no norm.
        return StepResult(loss, None if norm is None else float(norm), self.engine.skipped_steps > skipped_before,
                          scale)

    @torch.no_grad()
    def eval_loss(self, micro_batches: list[torch.Tensor]) -> float:
        self.engine.eval()
        if self.pipelined:
            it = iter([(b[:, :-1].to(self.device), b[:, 1:].to(self.device)) for b in micro_batches])
            # One schedule for all micro-batches (one fill and drain); the mean is already over DP.
            return float(self.engine.eval_batch(data_iter=it, num_micro_batches=len(micro_batches)))
        losses = [self.engine.module.loss_fn(self.engine(b[:, :-1].to(self.device)), b[:, 1:].to(self.device)).item()
                  for b in micro_batches]
        return self._dp_mean(sum(losses) / len(losses))

    def diagnose_nonfinite(self) -> str | None:
        where = first_nonfinite(self.engine.module)
        if where and self.pipelined:  # name it as llm/model.py does, not by pipeline layer index
            from parallel.pipeline import stage_param_names
            kind, _, name = where.rpartition(" ")
            where = f"{kind} {stage_param_names(self.engine.module).get(name, name)}"
        return where

    def save(self, path: Path) -> None:
        from parallel.consolidate import gather_full_state_dict
        self.engine.save_checkpoint(str(path), tag="deepspeed", client_state={"layout": self.layout})
        # The consolidated single-process weights, so any layout (and debug mode, and generate()) can load them.
        full = gather_full_state_dict(self.engine.module, self.cfg.model, self.topo, self.pipelined,
                                      self.cfg.parallel.zero_stage)
        if full is not None:
            torch.save(full, path / "model.pt")

    def load(self, path: Path) -> None:
        if self.reshard_from is not None:
            from parallel.universal import load_resharded
            return load_resharded(self.engine, path, self.is_main, self.any_rank)
        load_path, _ = self.engine.load_checkpoint(str(path), tag="deepspeed")
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {path}")


def run_distributed(cfg: RunConfig, launch: LaunchEnv, eval_only: bool = False) -> TrainOutcome:
    import torch.distributed as dist
    from llm.train.setup import (build_datasets, check_tokenizer, hardware_flops_per_token, model_flops_per_token,
                                 prepare_out_dir)
    from parallel.topology import Topology, check_layout

    tp, pp, dp = check_layout(cfg, launch.world_size)  # before init, so a layout error costs no rendezvous
    device = init_distributed(launch)
    topo = Topology(tp, pp, dp)
    print(f"rank {launch.rank} on {socket.gethostname()}: local rank {launch.local_rank}, device {device}, "
          f"{topo.coords()}", flush=True)
    check_tokenizer(cfg)
    train_set, valid_set = build_datasets(cfg)
    prepare_out_dir(cfg, is_main=launch.rank == 0)
    torch.manual_seed(cfg.train.seed)
    backend = DeepSpeedBackend(cfg, topo, device)
    peak, source = device_peak_flops(device, cfg.precision.dtype, launch)
    if launch.rank == 0:
        import json
        (Path(cfg.out_dir) / "deepspeed_config.json").write_text(json.dumps(backend.ds_config, indent=1))
        print(f"layout tp={tp} pp={pp} dp={dp} zero={cfg.parallel.zero_stage} precision={cfg.precision.dtype}; "
              f"{cfg.total_steps} steps; MFU against {peak / 1e12:.2f} TFLOP/s per device ({source})", flush=True)
    # On CPU a node's ranks share its cores, so the peak is per node (measured with all its cores).
    n_devices = launch.world_size if device.type == "cuda" else max(1, launch.world_size // local_world_size(launch))
    outcome = train(cfg, backend, train_set, valid_set, model_flops_per_token(cfg), peak, n_devices,
                    hardware_flops_per_token=hardware_flops_per_token(cfg),
                    barrier=dist.barrier, log=print, eval_only=eval_only)
    dist.barrier()
    dist.destroy_process_group()
    return outcome


def initialize_engine(model: torch.nn.Module, ds_config: dict, mpu=None):
    """`deepspeed.initialize` for a plain model with our parameter groups (weight decay on matrices only, frozen
    parameters left out); returns the engine. The alignment stages (llm/align/engine.py) wrap each trainable
    model with it, so this module stays the one place that calls `deepspeed.initialize`."""
    import deepspeed
    wd = ds_config["optimizer"]["params"]["weight_decay"]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, wd), config=ds_config,
                                           mpu=mpu)
    return engine
