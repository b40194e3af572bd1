"""Expert parallelism through DeepSpeed's AutoEP (deepspeed 0.19, module_inject/auto_ep*.py).

With parallel.expert = ep > 1, `deepspeed.initialize` finds every MoE block of llm/moe.py by its module names
(`expert_parallel_config` below tells it the names) and swaps it for an `AutoEPMoELayer`: the same router (its
weight copied into `router.gate`), each rank keeping E/ep of the experts (`experts.w1/w3/w2`, our
w_gate/w_up/w_down), tokens sent to their experts' ranks and back by all-to-all, and our shared-expert SwiGLU kept as
it is (`shared_experts`). Its routing is ours (softmax in fp32, top_k, renormalised, applied after the experts,
dropless), so the layer computes our function: measured bit-identical logits at ep=2 on the CPU with gloo.
The expert-parallel groups are DeepSpeed's own, carved out of the data-parallel ranks; expert gradients are averaged
over the ranks that hold the same experts, everything else over all data-parallel ranks.

What stays ours: the load-balancing loss, which needs the router logits. `attach` points the model's
`router_modules` at the AutoEP routers' gate linears, whose outputs are the raw logits, so `Transformer.moe_loss`
sees the same tensors as in debug mode. Under the launcher AutoEP is used at every expert degree, 1 included (one set
of names in DeepSpeed's checkpoints, so that they reshard between degrees); debug mode runs llm/moe.py's blocks.

Checkpoint names: a consolidated `model.pt` always has llm/model.py names and full (E, ...) expert tensors
(`full_name`, `gather_experts`), so debug mode, any expert degree and the Hugging Face export read the same file.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from llm.config import RunConfig

# AutoEP's parameter names inside a replaced block → ours (llm/moe.py).
AUTOEP_NAMES = {"router.gate.weight": "router.weight", "experts.w1": "experts.w_gate", "experts.w3": "experts.w_up",
                "experts.w2": "experts.w_down", "shared_experts.": "shared."}


def expert_parallel_config(cfg: RunConfig) -> dict | None:
    """The `expert_parallel` section of the DeepSpeed JSON (None for a dense model). Also at ep = 1, so that every
    expert degree runs the same layer and saves the same names: a checkpoint then reshards between degrees."""
    moe, ep = cfg.model.moe, cfg.parallel.expert
    if moe is None:
        return None
    return {
        "enabled": True, "autoep_size": ep,
        "moe_layer_pattern": r"layers\.\d+\.mlp", "router_pattern": "router", "expert_pattern": "experts",
        "expert_w1": "w_gate", "expert_w3": "w_up", "expert_w2": "w_down",
        "num_experts_attr": "num_experts", "top_k_attr": "top_k", "top_k": moe.top_k,
        # Mixtral's routing, as llm/moe.py: softmax over all experts, top_k weights renormalised, applied to the
        # experts' outputs.
        "score_func": "softmax", "score_apply": "post", "route_norm": True,
        "has_shared_experts": moe.shared_experts > 0,
        "shared_experts_pattern": "shared" if moe.shared_experts else None,
        # Grouped matmuls (torch._grouped_mm, Triton) on CUDA in bf16, the dtype those kernels are built for, and
        # for widths whose rows they can address (16-byte aligned: multiples of 8 bf16 elements); elsewhere one
        # matmul per expert, the same arithmetic.
        "use_grouped_mm": torch.cuda.is_available() and cfg.precision.dtype == "bf16"
        and moe.expert_d_ff % 8 == 0 and cfg.model.d_model % 8 == 0,
    }


def replaced_layers(module: nn.Module) -> list[tuple[int, nn.Module]]:
    """(block index, AutoEPMoELayer) of a model whose MoE blocks AutoEP replaced."""
    from deepspeed.module_inject.auto_ep_layer import AutoEPMoELayer
    return [(i, layer.mlp) for i, layer in enumerate(module.layers) if isinstance(layer.mlp, AutoEPMoELayer)]


def attach(module: nn.Module) -> None:
    """After deepspeed.initialize: make the model record the AutoEP routers' logits for its balance loss."""
    layers = replaced_layers(module)
    if layers:
        gates = [moe.router.gate for _, moe in layers]
        module.router_modules = lambda: gates


def full_name(name: str) -> str:
    """llm/model.py's name of a parameter of a model whose MoE blocks AutoEP replaced (others unchanged)."""
    for theirs, ours in AUTOEP_NAMES.items():
        if f".mlp.{theirs}" in name:
            return name.replace(f".mlp.{theirs}", f".mlp.{ours}")
    return name


def is_expert_param(name: str) -> bool:
    """Whether an AutoEP-named parameter is one rank's slice of the routed experts (E/ep rows of each)."""
    return ".mlp.experts.w" in name


@torch.no_grad()
def gather_experts(layer: nn.Module, local: torch.Tensor) -> torch.Tensor:
    """All E experts of one AutoEP layer's parameter, in expert order, from each expert-parallel rank's slice.
    Collective over the layer's expert-parallel group."""
    from deepspeed.checkpoint.autoep_affine import autoep_experts_for_rank
    parts = [torch.empty_like(local) for _ in range(layer.ep_size)]
    dist.all_gather(parts, local.contiguous(), group=layer.ep_group)
    full = torch.empty((layer.num_experts, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for rank, part in enumerate(parts):
        full[autoep_experts_for_rank(layer.expert_placement_descriptor, rank)] = part
    return full


def layer_of(module: nn.Module, name: str) -> nn.Module:
    """The AutoEP layer that owns parameter `name` ('layers.<i>.mlp.experts.w1')."""
    return module.layers[int(name.split(".")[1])].mlp
