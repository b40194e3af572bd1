"""The DeepSpeed backend of the training loop: parallel/runtime.py's runtime with the loop's steps on top.

`DeepSpeedBackend` drives the engine of a model that parallel/parallelize.py has already laid out (tensor
parallelism, pipeline stages, activation checkpointing); DeepSpeed adds ZeRO sharding, mixed precision and
gradient accumulation over the data-parallel group. The start-up of a launched job is parallel/start.py.
"""
from __future__ import annotations

from pathlib import Path

import torch

from llm.config import RunConfig
from llm.train.runtime import StepResult, first_nonfinite, first_nonfinite_state
from llm.train.inputs import document_eos, split_batch
from parallel import context, experts, universal
from parallel.consolidate import gather_full_state_dict
from parallel.ds_config import deepspeed_config
from parallel.names import stage_param_names
from parallel.parallelize import parallelize
from parallel.runtime import DistributedRuntime, initialize_engine
from parallel.topology import Topology
from typed_yaml.disk import disk_full_reason


class DeepSpeedBackend(DistributedRuntime):
    """The `Backend` (llm/train/backend.py) of a launched job: this rank's DeepSpeed engine, plain or pipeline, with
    the collectives of its runtime over the topology's data-parallel group."""

    def __init__(self, cfg: RunConfig, topo: Topology, device: torch.device):
        import torch.distributed as dist

        super().__init__(device, topo.dp_group, topo.dp_rank, topo.dp)
        self.cfg, self.topo, self.dist = cfg, topo, dist
        self.pipelined = topo.pp > 1
        self.layout = {"backend": "deepspeed", "tp": topo.tp, "pp": topo.pp, "dp": topo.dp,
                       "zero_stage": cfg.parallel.zero_stage}
        if topo.cp > 1:
            self.layout["cp"] = topo.cp
        self.eos_id = document_eos(cfg)
        if cfg.model.moe is not None:
            self.layout["ep"] = cfg.parallel.expert
        self.ds_config = deepspeed_config(cfg, topo.dp, topo.cp)
        # checkpoint.reshard: a checkpoint of another layout is resumed through DeepSpeed's universal format,
        # which deepspeed.initialize must be told about (parallel/universal.py).
        self.reshard_from = universal.reshard_source(cfg, self.layout)
        if self.reshard_from is not None:
            self.ds_config.setdefault("checkpoint", {})["load_universal"] = True
        self.model = parallelize(cfg, topo)
        # The pipeline engine builds its grid from the module's topology; a plain engine takes ours as its mpu.
        self.engine = initialize_engine(self.model, self.ds_config, None if self.pipelined else topo)
        self.routing = None
        if cfg.model.moe is not None:  # never pipelined (parallel/topology.py refuses it)
            experts.attach(self.engine.module)
            self.routing = self.engine.module.routing

    def can_reshard(self, saved: dict, current: dict) -> tuple[bool, str]:
        return universal.can_reshard(saved, current)

    def _dp_mean(self, value: float) -> float:
        return self.sum(value) / self.dp_size

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

    def _lm_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The LM loss of one micro-batch through the engine's forward (never the full logits: llm/model.py
        `Transformer.forward(targets=...)`); under context parallelism this rank's weighted share of it."""
        inputs, targets, kw = split_batch(batch.to(self.device), self.eos_id)
        if self.topo.cp == 1:
            return self.engine(inputs, targets=targets, **kw)
        inputs, targets, kw, weight = context.shard(inputs, targets, kw, self.topo.cp, self.topo.cp_rank,
                                                    self.topo.cp_group)
        return context.context_loss(self.engine, inputs, targets, kw, weight)

    def _context_sum(self, loss: torch.Tensor) -> torch.Tensor:
        """The whole samples' mean loss from the context ranks' weighted shares (unchanged without context
        parallelism)."""
        if self.topo.cp > 1:
            loss = loss.detach().clone()
            self.dist.all_reduce(loss, group=self.topo.cp_group)
        return loss

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
                lm_loss = self._lm_loss(b)
                # DeepSpeed averages over data × context ranks; the context shares must add (parallel/context.py).
                self.engine.backward(lm_loss * self.topo.cp + self.engine.module.moe_loss())
                loss_t = self._context_sum(lm_loss.detach())
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
        losses = [self._context_sum(self._lm_loss(b)).item() for b in micro_batches]
        return self._dp_mean(sum(losses) / len(losses))

    def diagnose_nonfinite(self) -> str | None:
        # Under ZeRO the fp32 masters and moments live in the wrapped torch optimizer, partitioned over the ranks.
        inner = getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)
        where = first_nonfinite(self.engine.module) or first_nonfinite_state(inner)
        if where and self.pipelined:  # name it as llm/model.py does, not by pipeline layer index
            kind, _, name = where.rpartition(" ")
            where = f"{kind} {stage_param_names(self.engine.module).get(name, name)}"
        return where

    def save(self, path: Path) -> None:
        """Collective. A full disk on this rank is raised only after this rank made every collective call the
        others make (DeepSpeed's closing barrier, the gather of the full weights), so that llm/train/loop.py's
        agreement on the failure pairs with theirs instead of leaving them waiting (or mismatching collectives)."""
        failure = None
        try:
            self.engine.save_checkpoint(str(path), tag="deepspeed", client_state={"layout": self.layout})
        except (OSError, RuntimeError) as e:
            if disk_full_reason(e, path) is None:
                raise
            # DeepSpeed 0.19's save_checkpoint writes after its tag check and ends with dist.barrier(): the only
            # collective the ranks whose writes succeeded are still to make inside it.
            failure = e
            self.dist.barrier()
        # The consolidated single-process weights, so any layout (and debug mode, and generate()) can load them.
        full = gather_full_state_dict(self.engine.module, self.cfg.model, self.topo, self.pipelined,
                                      self.cfg.parallel.zero_stage)
        if failure is not None:
            raise failure
        if full is not None:
            with open(path / "model.pt", "wb") as f:  # a file object: a full disk keeps its errno
                torch.save(full, f)

    def load(self, path: Path) -> None:
        from parallel.safe_checkpoint import guard
        guard(path)  # before DeepSpeed's engine or converter opens any of its files
        if self.reshard_from is not None:
            return universal.load_resharded(self.engine, path, self.is_main, self.any_rank)
        load_path, _ = self.engine.load_checkpoint(str(path), tag="deepspeed")
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {path}")
