"""A Llama-style decoder-only transformer in plain torch.nn.

RMSNorm (Zhang & Sennrich 2019), rotary position embeddings (Su et al. 2021), SwiGLU MLP (Shazeer 2020),
grouped-query attention (Ainslie et al. 2023) through `F.scaled_dot_product_attention`, optional tied
embeddings, and a KV-cached `generate()`. `RewardModel` is the same Transformer with a scalar value head (the
alignment stages' reward model and PPO critic, InstructGPT's): its reward for a sequence is the value at its last
token (the EOS that closes the response), the critic uses the values at every response position; the body's
`lm_head` is kept (the state dict stays the LM's, so a language-model checkpoint loads into it by name) but frozen.

This file knows nothing of parallelism: no process groups, no DeepSpeed. The parallel layer wraps it by
swapping submodules (by their names here) and slicing these weights, so keep the module names stable:
`tok_embeddings`, `layers[i].{attn_norm, attn.{wq,wk,wv,wo}, mlp_norm, mlp.{w_gate,w_up,w_down}}`, `norm`,
`lm_head`; an MoE block's `mlp` is llm/moe.py's `MoE` (`router`, `experts`, `shared`), which DeepSpeed's AutoEP
finds by these names (parallel/experts.py). Attention reads its head counts from attributes, so a tensor-parallel
wrapper that gives a rank a slice of the heads only has to change `n_heads`/`n_kv_heads` on the module.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm.chunked_loss import chunk_loss_and_grads, linear_cross_entropy
from llm.config import ModelConfig
from llm.config.model import RopeScalingConfig
from llm.moe import MoE, RouterRecord
from llm.rope import rope_tables


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: bf16's 8-bit mantissa makes the mean of squares noticeably wrong.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Rotary(nn.Module):
    """Rotary embedding tables for positions [0, max_len); rotates pairs (i, i + head_dim/2) as Llama's HF port."""

    def __init__(self, head_dim: int, max_len: int, theta: float, scaling: RopeScalingConfig | None = None):
        super().__init__()
        cos, sin = rope_tables(head_dim, max_len, theta, scaling)  # llm/rope.py: plain, linear, llama3 or yarn
        # Non-persistent: derived from the config, so checkpoints stay free of them.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor, start_pos: int) -> torch.Tensor:
        """x: (batch, heads, seq, head_dim)."""
        seq = x.shape[-2]
        if start_pos + seq > self.cos.shape[0]:
            raise ValueError(f"position {start_pos + seq} exceeds the model's seq_len {self.cos.shape[0]}")
        cos = self.cos[start_pos:start_pos + seq].to(x.dtype)
        sin = self.sin[start_pos:start_pos + seq].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@dataclass
class KVCache:
    """Preallocated keys/values of one layer: (batch, n_kv_heads, max_len, head_dim)."""

    k: torch.Tensor
    v: torch.Tensor


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.seq_len, cfg.rope_theta, cfg.rope_scaling)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rotary(q, start_pos), self.rotary(k, start_pos)
        mask, causal = None, True
        if cache is not None:
            cache.k[:b, :, start_pos:start_pos + t] = k
            cache.v[:b, :, start_pos:start_pos + t] = v
            k, v = cache.k[:b, :, :start_pos + t], cache.v[:b, :, :start_pos + t]
            if start_pos > 0:
                # Query i sits at absolute position start_pos + i and may see keys 0..start_pos + i.
                causal = False
                mask = torch.ones(t, start_pos + t, dtype=torch.bool, device=x.device).tril(start_pos)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and t > 1,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w_gate = nn.Linear(d_model, d_ff, bias=False)
        self.w_up = nn.Linear(d_model, d_ff, bias=False)
        self.w_down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    """Pre-norm residual block. Self-contained (owns its rotary tables) so a pipeline stage can hold any run of them."""

    def __init__(self, cfg: ModelConfig, index: int = 0):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if cfg.is_moe_layer(index):
            m = cfg.moe
            self.mlp = MoE(cfg.d_model, m.experts, m.top_k, m.expert_d_ff, m.shared_experts * m.expert_d_ff, SwiGLU)
        else:
            self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cache, start_pos))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


@torch.no_grad()
def init_parameters(module: nn.Module, cfg: ModelConfig, seed: int, prefix: str = "") -> None:
    """Deterministic init of `module`'s parameters, each from a generator seeded by (seed, its full name).

    Seeding per name (not from the global RNG, not in creation order) means a pipeline stage that builds
    only `layers.5` under the prefix "layers.5.", or a rank about to slice a weight for tensor parallelism,
    gets bit-identical values to the single-process model's.
    """
    std = cfg.init_std
    # GPT-2's scaling of residual-output projections keeps the residual stream's variance flat in depth.
    out_std = std / math.sqrt(2 * cfg.n_layers)
    for name, p in module.named_parameters():
        full = prefix + name
        if full.endswith("norm.weight"):
            p.fill_(1.0)
            continue
        if full == "lm_head.weight" and cfg.tie_embeddings:
            full = "tok_embeddings.weight"  # tied: the one tensor must get the embedding's values wherever it lives
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(full.encode()))
        scale = out_std if full.endswith(("wo.weight", "w_down.weight", "experts.w_down")) else std
        p.copy_(torch.randn(p.shape, generator=gen) * scale)


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32 over positions whose target is not ignore_index."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        # Swappable so a tensor-parallel wrapper can install a vocab-parallel loss without touching forward.
        self.loss_fn = cross_entropy_loss
        # One chunk of the fused head + loss; train.compile swaps in a compiled twin (llm/train/compile.py).
        self.loss_chunk_step = chunk_loss_and_grads
        # The modules whose outputs are the MoE layers' router logits; the parallel layer points it at DeepSpeed's
        # router when AutoEP has replaced the MoE blocks (parallel/experts.py).
        self.router_modules = lambda: [layer.mlp.router for layer in self.layers if isinstance(layer.mlp, MoE)]
        self.routing = RouterRecord()
        self.init_weights(seed)

    def init_weights(self, seed: int) -> None:
        init_parameters(self, self.cfg, seed)

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None, start_pos: int = 0) -> torch.Tensor:
        """tokens: (batch, seq) int64 → logits (batch, seq, vocab)."""
        return self.lm_head(self.hidden(tokens, caches, start_pos))

    def hidden(self, tokens: torch.Tensor, caches: list[KVCache] | None = None, start_pos: int = 0) -> torch.Tensor:
        """tokens: (batch, seq) int64 → the final-norm activations (batch, seq, d_model) the LM head reads."""
        with self.routing.recording(self.router_modules() if self.cfg.moe is not None else []):
            x = self.tok_embeddings(tokens)
            for i, layer in enumerate(self.layers):
                x = layer(x, None if caches is None else caches[i], start_pos)
        return self.norm(x)

    def moe_loss(self) -> torch.Tensor | float:
        """The MoE auxiliary losses of the last forward pass (load balancing, router z-loss), weighted; 0 for a dense
        model. Adds the pass's routing to `self.routing`'s statistics."""
        if self.cfg.moe is None:
            return 0.0
        return self.routing.loss(self.cfg.moe)

    def lm_loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of `self.loss_fn`. With the plain loss and a plain lm_head, the head and
        the loss run fused over row chunks (llm/chunked_loss.py), so the full logits are never materialised; a
        swapped loss (the vocab-parallel one of tensor parallelism) or head gets the logits as before."""
        if self.loss_fn is cross_entropy_loss and type(self.lm_head) is nn.Linear:
            return linear_cross_entropy(self.hidden(tokens), self.lm_head.weight, targets, step=self.loss_chunk_step)
        return self.loss_fn(self(tokens), targets)

    def compute_loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective: `lm_loss` plus, for an MoE model, its auxiliary losses (`moe_loss`)."""
        loss = self.lm_loss(tokens, targets)
        return loss + self.moe_loss() if self.cfg.moe is not None else loss

    def new_caches(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        p = self.lm_head.weight
        max_len = max_len or self.cfg.seq_len
        out = []
        for layer in self.layers:
            a = layer.attn
            shape = (batch_size, a.n_kv_heads, max_len, a.head_dim)
            out.append(KVCache(torch.zeros(shape, dtype=p.dtype, device=p.device),
                               torch.zeros(shape, dtype=p.dtype, device=p.device)))
        return out

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample continuations of equal-length prompts (batch, t) with a KV cache.

        temperature=0 is greedy. Rows that emit `eos_id` keep emitting it (so callers can cut at the first EOS).
        Returns (batch, t + n) with n <= max_new_tokens (fewer if every row finished or seq_len was reached).
        """
        b, t = prompt.shape
        steps = min(max_new_tokens, self.cfg.seq_len - t)
        if steps <= 0:
            return prompt
        was_training = self.training
        self.eval()
        caches = self.new_caches(b, t + steps)
        out = prompt
        logits = self(prompt, caches, 0)[:, -1]
        done = torch.zeros(b, dtype=torch.bool, device=prompt.device)
        for i in range(steps):
            nxt = sample_next(logits.float(), temperature, top_k, top_p, generator)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            if (eos_id is not None and bool(done.all())) or i == steps - 1:
                break
            logits = self(nxt[:, None], caches, t + i)[:, -1]
        self.train(was_training)
        return out


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from (batch, vocab) logits with temperature, top-k and nucleus (top-p) filtering."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p; the first token always survives.
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class RewardModel(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.body = Transformer(cfg, seed=seed)
        self.body.lm_head.weight.requires_grad_(False)
        self.v_head = nn.Linear(cfg.d_model, 1, bias=True)
        # A small init keeps the initial rewards near 0 (the RM starts from an indifferent scorer).
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        with torch.no_grad():
            self.v_head.weight.copy_(torch.randn(self.v_head.weight.shape, generator=gen) / (cfg.d_model + 1) ** 0.5)
            self.v_head.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-position values (batch, seq) in fp32."""
        return self.v_head(self.body.hidden(tokens)).squeeze(-1).float()

    def moe_loss(self) -> torch.Tensor | float:
        """The body's MoE auxiliary losses of the last forward pass (Transformer.moe_loss); 0 for a dense body."""
        return self.body.moe_loss()

    def score(self, tokens: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
        """Reward of each right-padded sequence: the value at `last_index` (its EOS position), shape (batch,)."""
        values = self(tokens)
        return values.gather(1, last_index[:, None]).squeeze(1)
