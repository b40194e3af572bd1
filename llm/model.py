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

    def forward(self, x: torch.Tensor, start_pos: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, seq, heads, head_dim), at positions start_pos.. or at `positions` (batch, seq) when given (a
        document's tokens counted from its start, a context-parallel rank's slice counted from the sample's)."""
        seq = x.shape[1]
        if positions is None:
            if start_pos + seq > self.cos.shape[0]:
                raise ValueError(f"position {start_pos + seq} exceeds the model's seq_len {self.cos.shape[0]}")
            cos, sin = self.cos[start_pos:start_pos + seq, None], self.sin[start_pos:start_pos + seq, None]
        else:
            cos, sin = self.cos[positions][:, :, None], self.sin[positions][:, :, None]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@dataclass
class KVCache:
    """Preallocated keys/values of one layer: (batch, n_kv_heads, max_len, head_dim)."""

    k: torch.Tensor
    v: torch.Tensor


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(batch, 1, seq, seq) boolean attention mask: query i sees key j when j <= i and both lie in one document."""
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same & torch.ones_like(same[0], dtype=torch.bool).tril())[:, None]


class CausalAttention(nn.Module):
    """softmax(q·kᵀ/√d)·v over (batch, seq, heads, head_dim) queries, keys and values: causal, or causal within each
    document when `doc_ids` (batch, seq) is given. A module of its own (without parameters) so that the parallel layer
    can wrap it: under context parallelism DeepSpeed's Ulysses attention hands it the whole sequence for a slice of
    the heads (parallel/context.py).

    Kernel: `F.scaled_dot_product_attention`. Plain causal attention takes its `is_causal` path (flash attention on
    CUDA); document masking passes a boolean (seq × seq) mask, which SDPA runs with its memory-efficient kernel on
    CUDA and its math kernel on CPU, the mask costing seq² bytes per sample row."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        mask = None if doc_ids is None else document_mask(doc_ids)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            is_causal=mask is None and q.shape[1] > 1, dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=k.shape[2] != q.shape[2])
        return y.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.seq_len, cfg.rope_theta, cfg.rope_scaling)
        self.core = CausalAttention(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0,
                positions: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.rotary(self.wq(x).view(b, t, self.n_heads, self.head_dim), start_pos, positions)
        k = self.rotary(self.wk(x).view(b, t, self.n_kv_heads, self.head_dim), start_pos, positions)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        y = self.core(q, k, v, doc_ids) if cache is None else self._cached(q, k, v, cache, start_pos)
        return self.wo(y.reshape(b, t, self.n_heads * self.head_dim))

    def _cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, start_pos: int):
        """Generation: this step's keys and values join the cache; its queries attend over everything cached."""
        b, t = q.shape[:2]
        cache.k[:b, :, start_pos:start_pos + t] = k.transpose(1, 2)
        cache.v[:b, :, start_pos:start_pos + t] = v.transpose(1, 2)
        k, v = cache.k[:b, :, :start_pos + t], cache.v[:b, :, :start_pos + t]
        # Query i sits at absolute position start_pos + i and may see keys 0..start_pos + i.
        mask = torch.ones(t, start_pos + t, dtype=torch.bool, device=q.device).tril(start_pos) if start_pos else None
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, is_causal=mask is None and t > 1,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        return y.transpose(1, 2)


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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0,
                positions: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cache, start_pos, positions, doc_ids))
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
        # The loss of logits, loss_fn(logits, targets), for callers that hold them; swappable like `head_loss`
        # (training's loss, which never forms the logits), so tensor parallelism installs vocab-parallel ones.
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

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None, start_pos: int = 0, *,
                targets: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (batch, seq) int64 → logits (batch, seq, vocab); with `targets`, their `lm_loss` instead (never the
        full logits: what a wrapping engine calls to train, as a Hugging Face model's `labels=`)."""
        if targets is not None:
            return self.lm_loss(tokens, targets, positions=positions, doc_ids=doc_ids)
        return self.lm_head(self.hidden(tokens, caches, start_pos, positions, doc_ids))

    def hidden(self, tokens: torch.Tensor, caches: list[KVCache] | None = None, start_pos: int = 0,
               positions: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (batch, seq) int64 → the final-norm activations (batch, seq, d_model) the LM head reads.
        positions: (batch, seq) rotary positions instead of start_pos.. (llm/documents.py); doc_ids: (batch, seq)
        document of each token, attention then stays within documents."""
        with self.routing.recording(self.router_modules() if self.cfg.moe is not None else []):
            x = self.tok_embeddings(tokens)
            for i, layer in enumerate(self.layers):
                x = layer(x, None if caches is None else caches[i], start_pos, positions, doc_ids)
        return self.norm(x)

    def moe_loss(self) -> torch.Tensor | float:
        """The MoE auxiliary losses of the last forward pass (load balancing, router z-loss), weighted; 0 for a dense
        model. Adds the pass's routing to `self.routing`'s statistics."""
        if self.cfg.moe is None:
            return 0.0
        return self.routing.loss(self.cfg.moe)

    def lm_loss(self, tokens: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy: `self.head_loss` of the final-norm activations, so the full logits are
        never materialised. positions, doc_ids: as `hidden`."""
        return self.head_loss(self.hidden(tokens, positions=positions, doc_ids=doc_ids), targets)

    def head_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """hidden (batch, seq, d_model), targets (batch, seq) → the mean cross-entropy of lm_head's logits, formed
        one row chunk at a time (llm/chunked_loss.py). Swappable: an instance attribute `head_loss(hidden, targets)`
        replaces it, so tensor parallelism installs its vocab-parallel twin (parallel/tensor.py) and the model stays
        ignorant of parallelism. (A method, not a bound method stored in __init__: no reference cycle.)"""
        return linear_cross_entropy(hidden, self.lm_head.weight, targets, step=self.loss_chunk_step)

    def compute_loss(self, tokens: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None,
                     doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective: `lm_loss` plus, for an MoE model, its auxiliary losses (`moe_loss`)."""
        loss = self.lm_loss(tokens, targets, positions, doc_ids)
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
