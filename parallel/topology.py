"""The tensor × pipeline × context × data layout of a run and its process groups.

`check_layout` validates a layout against the world size, the model shape, the batch sizes and the DeepSpeed
pass-through keys without touching any process group, so launchers can fail before spawning anything.
`Topology` builds the groups once `torch.distributed` is initialised and is passed explicitly to whatever needs
them (no module globals).

Rank order is DeepSpeed's `PipeModelDataParallelTopology`: axes (pipe, data, model), row-major, so the
tensor-parallel ranks of a group are adjacent global ranks (the same node, the fastest links: TP
all-reduces twice per layer, forward and backward) and pipeline stages are the farthest apart (they only
exchange activations point to point). This is also Megatron-LM's default order, TP fastest, then DP, then PP.

The groups are those of DeepSpeed's `PipelineParallelGrid` over that topology: the tensor-parallel group IS
the grid's slice group, so a `PipelineModule(topology=topo.ds_topology)` agrees rank for rank with the
groups our tensor-parallel layers use. `Topology` also implements the "mpu" interface DeepSpeed queries
(deepspeed 0.19.8: runtime/engine.py, runtime/zero/stage_1_and_2.py, runtime/utils.py, utils/groups.py,
utils/bwc.py), so `deepspeed.initialize(mpu=topo)` makes ZeRO partition and reduce over the data-parallel
group only.
"""
from __future__ import annotations

import torch.distributed as dist

from llm.config import ConfigError, ModelConfig, ParallelConfig, TrainConfig
from llm.config.parallel import context_layout_errors, expert_layout_errors
from parallel.ds_config import batch_error, override_errors


def _split_config(cfg) -> tuple[ModelConfig, ParallelConfig, TrainConfig | None]:
    if isinstance(cfg, tuple):
        model, parallel = cfg
        return model, parallel, None
    return cfg.model, cfg.parallel, cfg.train


def tensor_parallel_errors(model: ModelConfig, tp: int, sequence_parallel: bool = False) -> list[str]:
    """Every way `model` cannot be split over `tp` tensor-parallel ranks (empty when it can)."""
    errors = []
    # Heads split whole (a head's dot product never crosses ranks); kv heads too, so every query head finds
    # its GQA key/value head on its own rank. The vocab and d_ff split into equal contiguous slices.
    for key in ("n_heads", "n_kv_heads", "vocab_size", "d_ff"):
        value = getattr(model, key)
        if value % tp != 0:
            errors.append(f"parallel.tensor={tp} does not divide model.{key}={value}")
    if sequence_parallel and tp > 1 and model.seq_len % tp != 0:
        errors.append(f"parallel.tensor={tp} does not divide model.seq_len={model.seq_len} "
                      "(parallel.sequence_parallel splits the sequence across the tensor-parallel ranks)")
    return errors


def check_tensor_parallel(model: ModelConfig, tp: int, sequence_parallel: bool = False) -> None:
    """Raise ConfigError naming every key of `model` that `tp` does not divide."""
    errors = tensor_parallel_errors(model, tp, sequence_parallel)
    if errors:
        raise ConfigError("; ".join(errors))


def check_layout(cfg, world_size: int) -> tuple[int, int, int]:
    """Validate the parallel layout of a run and return its degrees (tp, pp, dp).

    cfg: a RunConfig (anything with `.model`, `.parallel` and `.train`) or a (ModelConfig, ParallelConfig) pair,
    whose batch sizes are then not checked.
    world_size: number of processes of the job.
    Raises ConfigError listing every violated rule, each naming the keys and values, e.g.
    "parallel.tensor=3 does not divide model.n_heads=8": the degrees, the model shape, the global batch against
    micro-batch × data-parallel degree, and the parallel.deepspeed keys (parallel/ds_config.py).
    """
    model, parallel, train = _split_config(cfg)
    tp, pp, cp = parallel.tensor, parallel.pipeline, parallel.context
    errors = []
    if tp < 1 or pp < 1 or cp < 1:
        errors.append(f"parallel.tensor={tp}, parallel.pipeline={pp} and parallel.context={cp} must be >= 1")
    elif world_size % (tp * pp * cp) != 0:
        errors.append(f"world size {world_size} is not divisible by parallel.tensor={tp} × "
                      f"parallel.pipeline={pp}" + (f" × parallel.context={cp}" if cp > 1 else "")
                      + f" = {tp * pp * cp}")
    elif train is not None and (batch := batch_error(train, world_size // (tp * pp * cp))):
        errors.append(batch)
    if tp >= 1:
        errors += tensor_parallel_errors(model, tp, parallel.sequence_parallel)
    if model.n_layers < pp:
        errors.append(f"model.n_layers={model.n_layers} is fewer than parallel.pipeline={pp} stages "
                      "(every stage needs at least one layer)")
    dp = world_size // (tp * pp * cp) if min(tp, pp, cp) >= 1 else 0
    errors += expert_layout_errors(model.moe, parallel.expert, dp, tp, pp, parallel.zero_stage)
    errors += context_layout_errors(model, cp, tp, pp)
    errors += override_errors(parallel.deepspeed)
    if errors:
        raise ConfigError("; ".join(errors))
    return tp, pp, dp


class Topology:
    """Process groups of a tp × pp × dp layout, and DeepSpeed's `mpu` interface over them.

    Construct on every rank, in the same order, after `torch.distributed.init_process_group` (creating
    groups is collective). Attributes: `tp, pp, dp` (degrees), `tp_rank, pp_rank, dp_rank` (this rank's
    coordinates), `tp_group, pp_group, dp_group`, `ds_topology` (PipeModelDataParallelTopology) and `grid`
    (its PipelineParallelGrid).
    """

    def __init__(self, tp: int = 1, pp: int = 1, dp: int | None = None, cp: int = 1):
        """tp, pp: tensor and pipeline degrees; cp: context-parallel degree (parallel.context); dp (optional,
        checked) is what is left of the world."""
        if not dist.is_initialized():
            raise RuntimeError("Topology needs torch.distributed to be initialised first")
        # Imported here so that check_layout stays cheap for launchers (importing deepspeed takes seconds).
        import deepspeed.comm as ds_comm
        from deepspeed.runtime.pipe.topology import PipelineParallelGrid, PipeModelDataParallelTopology

        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if tp < 1 or pp < 1 or cp < 1 or self.world_size % (tp * pp * cp) != 0:
            raise ConfigError(f"world size {self.world_size} is not divisible by parallel.tensor={tp} × "
                              f"parallel.pipeline={pp} × parallel.context={cp} = {tp * pp * cp}")
        self.tp, self.pp, self.cp = tp, pp, cp
        self.dp = self.world_size // (tp * pp * cp)
        if dp is not None and dp != self.dp:
            raise ConfigError(f"data-parallel degree {dp} does not match world size {self.world_size} / "
                              f"(parallel.tensor={tp} × parallel.pipeline={pp} × parallel.context={cp}) = {self.dp}")
        if not ds_comm.is_initialized():
            if dist.get_backend() == "gloo":
                from parallel.ds_cpu import skip_shm_allreduce
                skip_shm_allreduce()
            # DeepSpeed's communication layer wraps the process group torch already has; the grid needs it.
            ds_comm.init_distributed(dist_backend=dist.get_backend(), verbose=False)
        # The grid's "data" axis holds data × context ranks: what DeepSpeed sees as its data-parallel group (ZeRO
        # partitions and gradients average over it; see the mpu section below). Context ranks are adjacent within it,
        # after the tensor ranks.
        self.ds_topology = PipeModelDataParallelTopology(num_pp=pp, num_mp=tp, num_dp=self.dp * cp)
        self.grid = PipelineParallelGrid(topology=self.ds_topology)
        coord = self.ds_topology.get_coord(self.rank)
        self.tp_rank, self.pp_rank = coord.model, coord.pipe
        self.dp_rank, self.cp_rank = divmod(coord.data, cp)
        self.tp_group = self.grid.get_slice_parallel_group()
        self.pp_group = self.grid.get_pipe_parallel_group()
        self.seq_dp_group = self.grid.get_data_parallel_group()
        self.dp_group, self.cp_group = self.seq_dp_group, None
        if cp > 1:
            self._split_context_groups()

    def _split_context_groups(self) -> None:
        """Split each grid data group (dp·cp ranks) into its context groups (cp adjacent ranks) and its data groups
        (every cp-th rank). Collective: every rank creates every group, in the same order."""
        for ranks in self.ds_topology.get_axis_comm_lists("data"):
            for i in range(self.dp):
                group = dist.new_group(ranks[i * self.cp:(i + 1) * self.cp])
                if self.rank in ranks[i * self.cp:(i + 1) * self.cp]:
                    self.cp_group = group
            for j in range(self.cp):
                group = dist.new_group(ranks[j::self.cp])
                if self.rank in ranks[j::self.cp]:
                    self.dp_group = group

    def coords(self) -> str:
        """This rank's place in the layout for log lines, e.g. 'tp=0/2 pp=1/2 dp=0/2'."""
        cp = f" cp={self.cp_rank}/{self.cp}" if self.cp > 1 else ""
        return f"tp={self.tp_rank}/{self.tp} pp={self.pp_rank}/{self.pp}{cp} dp={self.dp_rank}/{self.dp}"

    def __repr__(self) -> str:
        return f"Topology(rank={self.rank}/{self.world_size} {self.coords()})"

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    # --- DeepSpeed mpu interface ------------------------------------------------------------------------
    # Deliberately absent: get_sequence_parallel_* and initialize_sequence_parallel. DeepSpeed reads those as Ulysses
    # sequence parallelism, and its ZeRO stages then reduce gradients inconsistently (0-2 sum over the sequence
    # ranks, ZeRO-3's reduce-scatter averages; measured 1e-3 off the single-process loss at ZeRO-3's second step).
    # Under context parallelism DeepSpeed's "data parallel" group is instead the data × context ranks (the grid's
    # data axis: they hold the same parameters, so ZeRO partitions over all of them) and parallel/context.py scales
    # each rank's loss so that DeepSpeed's average over them is the sum over context ranks of the data mean.

    def get_global_rank(self) -> int:
        return self.rank

    def get_data_parallel_rank(self) -> int:
        return self.dp_rank * self.cp + self.cp_rank

    def get_data_parallel_world_size(self) -> int:
        return self.dp * self.cp

    def get_data_parallel_group(self):
        return self.seq_dp_group

    def get_data_parallel_group_ranks(self) -> list[int]:
        return list(self.grid.get_data_parallel_group_ranks())

    def get_tensor_model_parallel_rank(self) -> int:
        return self.tp_rank

    def get_tensor_model_parallel_world_size(self) -> int:
        return self.tp

    def get_tensor_model_parallel_group(self):
        return self.tp_group

    def get_tensor_model_parallel_src_rank(self) -> int:
        """Global rank of tensor-parallel rank 0 of this rank's group."""
        return self.ds_topology.get_rank(pipe=self.pp_rank, data=self.dp_rank * self.cp + self.cp_rank, model=0)

    # DeepSpeed's pipeline grid calls the tensor-parallel group the "slice" group.
    get_slice_parallel_rank = get_tensor_model_parallel_rank
    get_slice_parallel_world_size = get_tensor_model_parallel_world_size
    get_slice_parallel_group = get_tensor_model_parallel_group

    # "Model parallel" in DeepSpeed means every axis but data (pipe × tensor), as in PipelineParallelGrid: ZeRO
    # and the gradient-norm code all-reduce overflow flags and partial norms over it, and count replicated
    # parameters once per tensor-parallel group (via the tensor rank above). With pp == 1 it is the TP group.
    def get_model_parallel_rank(self) -> int:
        return self.grid.get_model_parallel_rank()

    def get_model_parallel_world_size(self) -> int:
        return self.grid.get_model_parallel_world_size()

    def get_model_parallel_group(self):
        return self.grid.get_model_parallel_group()

    def get_pipe_parallel_rank(self) -> int:
        return self.pp_rank

    def get_pipe_parallel_world_size(self) -> int:
        return self.pp

    def get_pipe_parallel_group(self):
        return self.pp_group

    get_pipeline_model_parallel_rank = get_pipe_parallel_rank
    get_pipeline_model_parallel_world_size = get_pipe_parallel_world_size
    get_pipeline_model_parallel_group = get_pipe_parallel_group
