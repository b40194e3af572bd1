"""Predicted time of one optimizer step of a layout: compute at an achievable MFU, communication over stated
bandwidths, and the pipeline bubble.

    step = compute / (1 − bubble) + tensor-parallel + pipeline point-to-point + exposed data-parallel traffic

  * compute: the FLOPs the hardware runs per step on one GPU (PaLM App. B's model FLOPs plus the forward
    passes activation checkpointing recomputes, llm/cost/flops.py) over peak × the GPU's achievable MFU
    (ACHIEVABLE_MFU, cited; overridable). Those published MFUs are end to end, so they already carry some
    communication: adding ours on top makes the prediction conservative for the layouts they used.
  * bubble: 1F1B's (p − 1)/(m + p − 1) of the step idle (Narayanan et al. 2021, arXiv:2104.04473 §2.2).
  * tensor parallel: 4 all-reduces of b·s·h activations per block per micro-batch (2 forward, 2 backward;
    Korthikanti et al. 2022 §4.2.2, the same volume as SP's all-gathers and reduce-scatters), 2 more per
    recomputed block, over the intra-node bandwidth (TP stays within a node), not overlapped.
  * pipeline: each micro-batch's activation forward and its gradient backward across each stage boundary,
    b·s·h elements (/tp: DeepSpeed partitions them over the TP group), over the inter-node bandwidth when the
    stages span nodes.
  * data parallel / ZeRO, 2-byte gradients and parameters of this rank's shard Ψ over dp ranks, ring
    collectives (all-reduce moves 2(n−1)/n of the buffer, reduce-scatter and all-gather (n−1)/n each): ZeRO-0
    all-reduces once per step, ZeRO-1 reduce-scatters at the boundary and all-gathers the updated weights;
    ZeRO-2 reduce-scatters every micro-batch; ZeRO-3 also all-gathers the weights in every forward and
    backward. DeepSpeed 0.19.8 overlaps this with computation only at ZeRO-3 (zero_optimization.overlap_comm
    defaults to true there, false otherwise), where at most the backward's compute hides it.
  * expert parallel (model.moe, parallel.expert = ep > 1): every MoE layer sends each token's top_k copies of its
    hidden state to the ranks holding their experts and back, in the forward (dispatch, combine) and again in the
    backward (their gradients): 4 all-to-alls per MoE layer per micro-batch, 2 more per recomputed one, each
    b·s·top_k·h elements of which the (ep − 1)/ep bound for other ranks cross the link (tokens routed uniformly, the
    balance the load-balancing loss aims at), over the intra-node bandwidth when ep ranks fit in a node (we assume
    DeepSpeed groups neighbouring ranks), else the inter-node; not overlapped (the experts wait for their tokens).
    The experts' gradients are reduced over their dp/ep expert-data-parallel ranks as the rest's over dp.
  * context parallel (parallel.context = C > 1, DeepSpeed Ulysses; Jacobs et al. 2023, arXiv:2309.14509, §3.1):
    around every layer's attention, q, k and v are sent all-to-all (sequence slices for head groups) and the output
    back: 4 all-to-alls in the forward, 4 in the backward (their gradients), 4 more per recomputed layer, each of the
    rank's b·(s/C) tokens × its heads' width (q and the output n_heads·head_dim/tp, k and v n_kv_heads·head_dim/tp),
    (C − 1)/C of it leaving the rank; over the intra-node bandwidth when tp·C ranks fit in a node (DeepSpeed puts the
    tensor ranks innermost, the context ranks next), else the inter-node; not overlapped (attention waits for its
    heads). Everything else works on b·s/C tokens, so the TP collectives and pipe messages shrink by C, and ZeRO's
    collectives run over the dp·C ranks that hold the same parameters (`Layout.zero_dp`).
  * optimizer offload: the gradients go to the CPU and the weights come back over PCIe (PCIE_BYTES_PER_S), and
    the CPU Adam step runs at CPU_ADAM_PARAMS_PER_S (ZeRO-Offload, Ren et al. 2021, arXiv:2101.06840, §6).
No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm.config import ModelConfig
from llm.cost.flops import datasheet_peak_flops, hfu_flops_per_token
from llm.cost.layout import Layout, pipeline_stages
from llm.cost.memory import PARAM_BYTES, expert_params_per_rank, stage_params
from typed_yaml import ConfigError

ACHIEVABLE_MFU = {
    # Llama 3 (Dubey et al. 2024, arXiv:2407.21783) Table 4: 38-43% BF16 MFU on 8,192-16,384 H100s.
    "h100-sxm": 0.40, "h200": 0.40,
    # Narayanan et al. 2021 (arXiv:2104.04473) Table 1: 44-52% of the A100's peak, GPT 1.7B-1T on 32-3,072 GPUs.
    "a100": 0.45,
    # PaLM (Chowdhery et al. 2022, arXiv:2204.02311) Table 3: 46.2% MFU on 6,144 TPU v4 chips.
    "tpu-v4": 0.46,
}
"""End-to-end MFU of published large runs, by accelerator (llm.cost.flops.PEAK_FLOPS names). The planner trains
in bf16, so accelerators without it (V100) have no entry."""


@dataclass(frozen=True)
class Network:
    """Achievable bus bandwidths per GPU in bytes/s (what nccl-tests report as busbw)."""

    intra_node: float
    inter_node: float


NETWORKS = {
    # NVLink 4 on HGX H100/H200: 450 GB/s per direction per GPU; nccl-tests all-reduce busbw ~360 GB/s.
    # 8 × 400 Gb/s NDR InfiniBand per 8-GPU node: 50 GB/s per GPU, ~40 achievable.
    "h100-sxm": Network(360e9, 40e9), "h200": Network(360e9, 40e9),
    # NVLink 3 on HGX A100: 300 GB/s per direction, ~230 achievable; 8 × 200 Gb/s HDR: 25 GB/s per GPU, ~20.
    "a100": Network(230e9, 20e9),
}
DEFAULT_NETWORK = Network(100e9, 10e9)
"""For accelerators without an entry: PCIe-class links within a node, 100 Gb/s Ethernet between nodes."""
PCIE_BYTES_PER_S = 25e9
"""PCIe 4.0 x16 (32 GB/s per direction), ~25 achievable; PCIe 5 hosts do better."""
CPU_ADAM_PARAMS_PER_S = 1e9
"""DeepSpeed's CPU Adam: ~1 s per billion parameters per step on a 2-socket server (ZeRO-Offload §6)."""


def canonical_gpu(name: str) -> str:
    from llm.cost.flops import ALIASES
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    return ALIASES.get(key, key)


@dataclass(frozen=True)
class StepTime:
    """Seconds of one optimizer step, by item (compute already includes the bubble)."""

    compute_s: float
    bubble_fraction: float
    tp_comm_s: float
    pp_comm_s: float
    dp_comm_s: float
    """Exposed data-parallel / ZeRO traffic (after overlap)."""
    offload_s: float
    ep_comm_s: float = 0.0
    """Expert-parallel all-to-alls (dispatch and combine, forward and backward); 0 without parallel.expert."""
    cp_comm_s: float = 0.0
    """Context-parallel (Ulysses) all-to-alls of q, k, v and the attention output; 0 without parallel.context."""

    @property
    def total_s(self) -> float:
        return (self.compute_s + self.tp_comm_s + self.pp_comm_s + self.dp_comm_s + self.offload_s + self.ep_comm_s
                + self.cp_comm_s)

    def as_dict(self) -> dict:
        return {"compute_s": self.compute_s, "bubble_fraction": self.bubble_fraction, "tp_comm_s": self.tp_comm_s,
                "pp_comm_s": self.pp_comm_s, "dp_comm_s": self.dp_comm_s, "offload_s": self.offload_s,
                **({"ep_comm_s": self.ep_comm_s} if self.ep_comm_s else {}),
                **({"cp_comm_s": self.cp_comm_s} if self.cp_comm_s else {}), "total_s": self.total_s}


def all_to_all_bytes_per_step(cfg: ModelConfig, layout: Layout, global_batch_size: int, recomputed: int = 0) -> float:
    """Bytes one rank sends to other ranks in the expert-parallel all-to-alls of one step (module docstring): per MoE
    layer and micro-batch 4 all-to-alls (2 more when the layer is recomputed) of b·s·top_k·h elements, (ep − 1)/ep
    of them leaving the rank. recomputed: blocks activation checkpointing recomputes (at the MoE layers' share)."""
    if cfg.moe is None or layout.ep == 1:
        return 0.0
    m = global_batch_size // (layout.micro_batch_size * layout.dp)
    per_call = PARAM_BYTES * layout.micro_batch_size * cfg.seq_len * cfg.moe.top_k * cfg.d_model
    calls = (4 + 2 * recomputed / cfg.n_layers) * cfg.moe_layers * m
    return calls * per_call * (layout.ep - 1) / layout.ep


def ulysses_bytes_per_step(cfg: ModelConfig, layout: Layout, global_batch_size: int, recomputed: int = 0) -> float:
    """Bytes one rank sends to other ranks in the context-parallel all-to-alls of one step (module docstring): per
    layer and micro-batch, q, k, v and the output in the forward and their gradients in the backward (all four again
    when the layer is recomputed), each b·(s/C) tokens of this rank's heads, (C − 1)/C of them leaving the rank.
    recomputed: blocks activation checkpointing recomputes."""
    c = layout.context
    if c == 1:
        return 0.0
    m = global_batch_size // (layout.micro_batch_size * layout.dp)
    width = 2 * (cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim / layout.tp  # q, k, v and the output
    per_layer = PARAM_BYTES * layout.micro_batch_size * cfg.seq_len / c * width
    passes = 2 * cfg.n_layers + recomputed  # forward and backward of every layer, forward of the recomputed ones
    return passes * m * per_layer * (c - 1) / c


def step_time(cfg: ModelConfig, layout: Layout, global_batch_size: int, gpu: str, gpus_per_node: int = 8,
              mfu: float | None = None, network: Network | None = None) -> StepTime:
    """Predicted step time (module docstring). mfu: achievable MFU (default ACHIEVABLE_MFU[gpu]; ValueError
    when the GPU has no entry and none is given). network: bandwidths (default NETWORKS[gpu])."""
    key = canonical_gpu(gpu)
    if mfu is None:
        if key not in ACHIEVABLE_MFU:
            raise ConfigError(f"no achievable MFU listed for {gpu!r} (listed: {', '.join(sorted(ACHIEVABLE_MFU))}); "
                             "pass one (--mfu)")
        mfu = ACHIEVABLE_MFU[key]
    net = network or NETWORKS.get(key, DEFAULT_NETWORK)
    t, p, d, c = layout.tp, layout.pp, layout.zero_dp, layout.context  # d: the ranks ZeRO reduces over
    m = global_batch_size // (layout.micro_batch_size * layout.dp)
    tokens_per_step = global_batch_size * cfg.seq_len
    k = layout.recompute_every_k
    recomputed = 0 if k == 0 else (-(-cfg.n_layers // k) if p == 1 else cfg.n_layers)
    flops = hfu_flops_per_token(cfg, recomputed) * tokens_per_step / layout.world_size
    bubble = (p - 1) / (m + p - 1)
    compute = flops / (datasheet_peak_flops(gpu, "bf16") * mfu) / (1 - bubble)

    act_bytes = PARAM_BYTES * layout.micro_batch_size * cfg.seq_len / c * cfg.d_model
    blocks_per_stage = cfg.n_layers / p
    tp_comm = 0.0
    if t > 1:
        collectives = (4 + 2 * recomputed / cfg.n_layers) * blocks_per_stage * m
        tp_comm = collectives * 2 * (t - 1) / t * act_bytes / net.intra_node
    pp_comm = 0.0
    if p > 1:
        bw = net.intra_node if layout.world_size <= gpus_per_node else net.inter_node
        pp_comm = 2 * m * (act_bytes / t) / bw

    psi = max(stage_params(cfg, kinds, t) for kinds in pipeline_stages(cfg, p))
    shard = PARAM_BYTES * psi
    dp_bw = net.intra_node if t * d <= gpus_per_node else net.inter_node  # d = dp·C, the whole world when pp = 1
    ring = (d - 1) / d / dp_bw * shard  # one reduce-scatter or all-gather of the shard
    dp_comm = {0: 2 * ring, 1: 2 * ring, 2: m * ring + ring, 3: 3 * m * ring}[layout.zero_stage] if d > 1 else 0.0
    psi_e, d_e = expert_params_per_rank(cfg, layout.ep), layout.dp // layout.ep  # no MoE with context > 1
    if psi_e and d_e > 1:  # the experts' gradients over their expert-data-parallel group (module docstring)
        ring_e = (d_e - 1) / d_e / dp_bw * PARAM_BYTES * psi_e
        dp_comm += {0: 2 * ring_e, 1: 2 * ring_e, 2: m * ring_e + ring_e, 3: 3 * m * ring_e}[layout.zero_stage]
    if layout.zero_stage == 3:
        dp_comm = max(0.0, dp_comm - compute * 2 / 3)  # overlapped with the backward (2/3 of the compute)
    offload = 0.0
    if layout.offload_optimizer:
        offload = 2 * shard / d / PCIE_BYTES_PER_S + psi / d / CPU_ADAM_PARAMS_PER_S
        if psi_e:  # the experts' shard too
            offload += 2 * PARAM_BYTES * psi_e / d_e / PCIE_BYTES_PER_S + psi_e / d_e / CPU_ADAM_PARAMS_PER_S
    ep_bw = net.intra_node if layout.ep <= gpus_per_node else net.inter_node
    ep_comm = all_to_all_bytes_per_step(cfg, layout, global_batch_size, recomputed) / ep_bw
    cp_bw = net.intra_node if t * c <= gpus_per_node else net.inter_node
    cp_comm = ulysses_bytes_per_step(cfg, layout, global_batch_size, recomputed) / cp_bw
    return StepTime(compute, bubble, tp_comm, pp_comm, dp_comm, offload, ep_comm, cp_comm)
