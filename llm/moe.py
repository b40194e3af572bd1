"""The mixture-of-experts feed-forward: token-choice top-k routing over SwiGLU experts, plus shared experts.

Routing is Mixtral's (Jiang et al. 2024, arXiv:2401.04088): router logits → softmax over all E experts in fp32 → the
top_k probabilities, renormalised to sum to 1, weight the chosen experts' outputs. It is dropless (no capacity): each
token reaches all of its experts whatever the others chose, as MegaBlocks argues for (Gale et al. 2022,
arXiv:2211.15841), so a run's losses do not depend on how its tokens are spread over ranks, and no token is dropped.
Shared experts (DeepSeek-MoE, Dai et al. 2024, arXiv:2401.06066) are one always-on SwiGLU added to the routed output.

The load-balancing loss (Switch Transformer, Fedus et al. 2022, eq. 4) and the optional router z-loss (ST-MoE,
Zoph et al. 2022, eq. 5) are computed from the router logits of each MoE layer, which the model records while it
runs (`Transformer.compute_loss`); `RouterStats` turns the same logits into the logged per-layer expert load and
router entropy.

Parameter names and layouts (kept stable: the parallel layer hands this module to DeepSpeed's AutoEP by them, and
the Hugging Face converter maps them onto Mixtral's):
  mlp.router.weight          (E, d_model)               nn.Linear, no bias
  mlp.experts.w_gate         (E, expert_d_ff, d_model)  each expert's SwiGLU gate, rows = outputs (as nn.Linear)
  mlp.experts.w_up           (E, expert_d_ff, d_model)
  mlp.experts.w_down         (E, d_model, expert_d_ff)
  mlp.shared.{w_gate,w_up,w_down}                       a dense SwiGLU of width shared_experts·expert_d_ff
No parallelism here.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked (E, out, in) weights; applies each to the rows routed to it."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int):
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.w_up = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.w_down = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        # AutoEP checks the experts' activation numerically against the form it computes.
        self.act_fn = F.silu

    def forward(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x: (N, d_model) rows sorted by expert, counts[e] of them for expert e → (N, d_model)."""
        outs = []
        for e, rows in enumerate(x.split(counts)):
            if rows.shape[0]:
                h = F.silu(rows @ self.w_gate[e].t()) * (rows @ self.w_up[e].t())
                outs.append(h @ self.w_down[e].t())
        return torch.cat(outs) if outs else x.new_zeros(x.shape)


class MoE(nn.Module):
    """The MoE feed-forward of one block: (batch, seq, d_model) → same shape."""

    def __init__(self, d_model: int, n_experts: int, top_k: int, expert_d_ff: int, shared_d_ff: int, swiglu):
        super().__init__()
        self.num_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = Experts(n_experts, d_model, expert_d_ff)
        self.shared = swiglu(d_model, shared_d_ff) if shared_d_ff else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        flat = x.reshape(-1, d)
        probs = torch.softmax(self.router(flat).float(), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        # Sort the (token, slot) assignments by expert so each expert sees one contiguous block of rows.
        order = torch.argsort(chosen.reshape(-1), stable=True)
        counts = torch.bincount(chosen.reshape(-1), minlength=self.num_experts).tolist()
        routed = self.experts(flat[order // self.top_k], counts) * weights.reshape(-1, 1)[order]
        out = torch.zeros_like(flat).index_add_(0, order // self.top_k, routed)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(b, t, d)


def route(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(router probabilities in fp32 (tokens, E), routed slots per expert (E,)) of one layer's logits (tokens, E):
    the one softmax and top-k that the balance loss and the logged statistics share."""
    probs = torch.softmax(logits.float(), dim=-1)
    chosen = probs.detach().topk(top_k, dim=-1).indices
    return probs, torch.bincount(chosen.reshape(-1), minlength=probs.shape[-1])


def balance_loss(logits: torch.Tensor, top_k: int, routed: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> torch.Tensor:
    """Switch's load-balancing loss E·Σᵢ fᵢ·Pᵢ of one layer's router logits (tokens, E): fᵢ the share of the
    tokens' top_k slots that went to expert i (no gradient), Pᵢ the mean router probability of expert i. 1 when the
    load is uniform; its gradient pushes probability away from over-used experts. `routed`: `route(logits, top_k)`
    when the caller has it already."""
    probs, counts = routed or route(logits, top_k)
    return probs.shape[-1] * (counts.float() / counts.sum() * probs.mean(0)).sum()


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss: the mean squared log-partition of the router logits."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


@dataclass
class RouterStats:
    """What one step's routing looked like, per MoE layer: the share of routed slots each expert got (load), the
    mean entropy of the router's distribution (in nats; log E is uniform), and tokens dropped (always 0: dropless)."""

    load: list[list[float]]
    entropy: list[float]
    dropped_tokens: int = 0

    @staticmethod
    def from_counts(counts: torch.Tensor, entropy_sum: torch.Tensor, tokens: float) -> "RouterStats":
        """counts: (layers, E) routed slots per expert; entropy_sum: (layers,) summed over `tokens` tokens."""
        load = counts.double() / counts.sum(-1, keepdim=True).clamp(min=1)
        return RouterStats(load.tolist(), (entropy_sum.double() / max(tokens, 1)).tolist())

    def collapsed_layers(self, factor: float = 3.0) -> list[tuple[int, int, float]]:
        """(layer, expert, share) for each layer whose busiest expert gets more than `factor` times the uniform
        share 1/E of the routed slots: the router has started to send most tokens to a few experts."""
        out = []
        for i, load in enumerate(self.load):
            busiest = max(range(len(load)), key=load.__getitem__)
            if load[busiest] > factor / len(load):
                out.append((i, busiest, load[busiest]))
        return out


class RouterRecord:
    """The router logits of the model's last forward pass, recorded by forward hooks on its router modules (ours or
    DeepSpeed's, whichever the model runs), and the routing statistics summed since they were last taken."""

    def __init__(self):
        self.logits: list[torch.Tensor] = []
        self.counts: torch.Tensor | None = None
        self.entropy: torch.Tensor | None = None
        self.tokens = 0

    @contextmanager
    def recording(self, modules: list[nn.Module]):
        if not modules:
            yield
            return
        self.logits = []
        # Removed when the forward pass ends, so a recomputed forward (activation checkpointing) records nothing.
        handles = [m.register_forward_hook(lambda _m, _in, out: self.logits.append(out)) for m in modules]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def loss(self, cfg) -> torch.Tensor:
        """cfg: MoEConfig. The weighted auxiliary losses of the recorded logits, averaged over the MoE layers (so the
        coefficients mean the same at any depth); adds their routing to the totals."""
        logits, self.logits = self.logits, []
        if not logits:
            raise RuntimeError("no router logits were recorded: call the model's forward before moe_loss()")
        total = logits[0].new_zeros((), dtype=torch.float32)
        counts, entropy = [], []
        for layer in logits:
            layer = layer.reshape(-1, layer.shape[-1])
            routed = route(layer, cfg.top_k)
            if cfg.aux_loss_coef:
                total = total + cfg.aux_loss_coef * balance_loss(layer, cfg.top_k, routed)
            if cfg.z_loss_coef:
                total = total + cfg.z_loss_coef * z_loss(layer)
            probs = routed[0].detach()
            counts.append(routed[1])
            entropy.append(-(probs * torch.log(probs.clamp(min=1e-30))).sum())
        counts, entropy = torch.stack(counts).cpu(), torch.stack(entropy).cpu().double()
        self.counts = counts if self.counts is None else self.counts + counts
        self.entropy = entropy if self.entropy is None else self.entropy + entropy
        self.tokens += logits[0].reshape(-1, logits[0].shape[-1]).shape[0]
        return total / len(logits)

    def take(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """(slots per expert (layers, E), summed entropy (layers,), tokens) since the last take; None if none."""
        if self.counts is None:
            return None
        out = (self.counts, self.entropy, self.tokens)
        self.counts, self.entropy, self.tokens = None, None, 0
        return out
