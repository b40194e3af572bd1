"""The MoE routing columns of the training log: per-layer expert load, router entropy, dropped tokens, and a warning
when a layer's load collapses onto a few experts (llm/moe.py's RouterRecord collects them while the model runs)."""
from __future__ import annotations

import torch

from llm.moe import RouterRecord, RouterStats
from typed_yaml import log


class RoutingLog:
    """Turns the routing since the last logged step into metrics columns; summed over the data-parallel ranks."""

    def __init__(self, record: RouterRecord | None, n_experts: int):
        self.record, self.n_experts = record, n_experts
        self.warned: set[int] = set()

    def row(self, runtime) -> dict:
        """Collective over the data-parallel ranks (runtime.gather_rows) when the model is an MoE."""
        if self.record is None:
            return {}
        counts, entropy, tokens = self.record.take() or (None, None, 0)
        if counts is None:
            return {}
        packed = torch.cat([counts.double().flatten(), entropy.double(), torch.tensor([float(tokens)])])
        total = runtime.gather_rows(packed[None].to(runtime.device)).sum(0).cpu()
        layers = entropy.numel()
        stats = RouterStats.from_counts(total[:layers * self.n_experts].view(layers, -1),
                                        total[layers * self.n_experts:-1], float(total[-1]))
        for layer, expert, share in stats.collapsed_layers():
            if layer not in self.warned:
                self.warned.add(layer)
                log.warning(f"MoE load collapse in MoE layer {layer}: expert {expert} got {share:.0%} of the routed "
                            f"slots (uniform: {1 / self.n_experts:.0%}); raise model.moe.aux_loss_coef if it persists")
        return {"moe_load": [[round(x, 4) for x in layer] for layer in stats.load],
                "moe_load_max": max(max(layer) for layer in stats.load) * self.n_experts,
                "moe_router_entropy": sum(stats.entropy) / len(stats.entropy),
                "moe_dropped_tokens": stats.dropped_tokens}
