"""Activation bytes held for the backward pass: Korthikanti et al. 2022's equations, and the same count for our block.

Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (arXiv:2205.05198),
§4, count the bytes of every tensor a GPT layer keeps for its backward pass (16-bit activations, 1-byte
dropout masks), with s sequence length, b micro-batch, h hidden size, a heads, t tensor-parallel degree:

    no parallelism                       s·b·h·(34 + 5·a·s/h)           (eq. 1)
    tensor parallel                      s·b·h·(10 + 24/t + 5·a·s/(h·t))  (eq. 2)
    tensor + sequence parallel           s·b·h/t·(34 + 5·a·s/h)         (eq. 4)
    selective recomputation (+ SP)       s·b·h·34/t                     (§5, Table 2)
    full recomputation                   2·s·b·h (the layer input; /t with SP)  (§5)

`korthikanti_layer_bytes` is that table. Our block (llm/model.py) is not their GPT layer: RMSNorm in fp32,
rotary embeddings, a SwiGLU MLP, no dropout, and attention through `scaled_dot_product_attention`, which keeps
the log-sum-exp (4 bytes per head and token) instead of the a·s² score and softmax tensors (so it behaves like
their selective recomputation of the attention core without recomputing anything). `block_bytes_per_token`
applies their method, tensor by tensor, to our block, with e the activation element size (2 in bf16, 4 in fp32),
q = n_heads·head_dim, kv = n_kv_heads·head_dim, f = d_ff, per token:

    each RMSNorm     (4 + e)·h + 4   its fp32 input copy (kept by pow), its normalised output (kept by ·weight)
                                 and the fp32 reciprocal RMS
    matmul inputs    2·e·h       the normalised inputs of wq/wk/wv and of w_gate/w_up (one tensor each)
    attention        2·e·q + 2·e·kv + 4·a
                     the rotated q and the attention output, which wo multiplies as it is (q, k and v are rotated
                     in (batch, seq, heads, dim) order and handed to SDPA transposed, so its output comes back in that
                     order and the reshape before wo copies nothing); the rotated k and v; the log-sum-exp (fp32). The
                     rotary multiply keeps only its cos/sin tables (the projections' outputs are not needed for a
                     gradient with respect to q).
    MLP              4·e·f       w_gate's output (silu), silu's output and w_up's (their product), the product (w_down)

A mixture-of-experts block (llm/moe.py) keeps the same norms, matmul inputs (the router and the shared experts read
the one normalised input) and attention; its MLP term becomes, with k = top_k, f_e = expert_d_ff, f_s the shared
width and E the experts, per token:

    routed slots     k·(3·e·h + 4·e·f_e + e + 36)   per slot: the gathered input row the expert multiplies, the
                     expert's output and its weighted output (kept by the product and by index_add), the SwiGLU's
                     4·e·f_e as above, the routing weight in e and in fp32 (4), the top-k index and three int64 copies
                     of the sort order (the gather, the weights' gather, index_add: 8 each)
    routing          (4 + e)·E + 4   the fp32 softmax output, the router logits the model's router record keeps for
                     the auxiliary losses until the loss (e·E), and the fp32 sum the top-k weights are divided by
    shared experts   4·e·f_s
Each token's hidden state goes through top_k experts, so the routed term is top_k times one expert's.
tests/llm/cost/test_activations_moe.py checks it against what autograd saves (the record aside, which lives in the
model, not the block).

Under tensor parallelism without sequence parallelism the norms and matmul inputs are replicated on every
rank and the rest is split t ways, as in eq. 2. With sequence parallelism the norms are split too, but our
column-parallel layers keep the all-gathered input they multiplied (they do not re-gather it in backward, as
Megatron does), so the matmul inputs stay whole. tests/llm/cost/test_activations.py checks these counts against the
tensors torch's autograd actually saves.

Under context parallelism (DeepSpeed Ulysses, Jacobs et al. 2023, arXiv:2309.14509, §3.1) of degree C a rank holds
seq/C tokens of each sample outside attention; around the attention core q, k, v and the output are exchanged
all-to-all so that the core sees the whole sequence for n_heads/C heads (n_kv_heads/C key/value heads). That is the
same number of elements, and the all-to-all keeps nothing for its backward (it is linear), so every term above,
the core's included, counts per token of the rank's slice: a block keeps block_bytes_per_token × b·seq/C.

The LM head and the loss never build the full logits: llm/chunked_loss.py walks the rows in chunks (`loss_bytes`).
No torch here.
"""
from __future__ import annotations

from llm.config import ModelConfig
from typed_yaml import ConfigError

KORTHIKANTI_2022 = "Korthikanti et al. 2022, arXiv:2205.05198"
FP32_BYTES = 4
TOKEN_ID_BYTES = 8
"""int64 token ids, kept by the embedding lookup for its backward."""
CHUNK_ROWS = 1024
"""Rows per chunk of the fused LM head + loss: llm/chunked_loss.py CHUNK_ROWS (that module imports torch; a test
checks the two agree)."""


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, t: int = 1, sequence_parallel: bool = False,
                            recompute: str = "none") -> float:
    """Bytes of activations one GPT layer keeps (Korthikanti et al. 2022, eqs. 1, 2, 4 and §5).

    recompute: 'none', 'selective' (attention core recomputed) or 'full' (only the layer input kept).
    Raises ValueError for another recompute mode.
    """
    sbh = s * b * h
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)
    attention_core = 0.0 if recompute == "selective" else 5 * a * s / h
    if recompute not in ("none", "selective"):
        raise ConfigError(f"recompute={recompute!r} must be 'none', 'selective' or 'full'")
    if sequence_parallel or t == 1:
        return sbh / t * (34 + attention_core)
    return sbh * (10 + 24 / t + attention_core / t)


def moe_mlp_bytes_per_token(cfg: ModelConfig, element_bytes: int = 2) -> float:
    """Bytes an MoE block's feed-forward keeps for backward per token (module docstring: routed slots, routing,
    shared experts)."""
    m, h, e = cfg.moe, cfg.d_model, element_bytes
    routed = m.top_k * (3 * e * h + 4 * e * m.expert_d_ff + e + FP32_BYTES + 4 * TOKEN_ID_BYTES)
    routing = (FP32_BYTES + e) * m.experts + FP32_BYTES
    return routed + routing + 4 * e * m.shared_experts * m.expert_d_ff


def block_bytes_per_token(cfg: ModelConfig, tp: int = 1, sequence_parallel: bool = False,
                          element_bytes: int = 2, layer: int | None = None) -> float:
    """Bytes one of our blocks keeps for backward per token of the micro-batch (module docstring), on one of
    `tp` tensor-parallel ranks. layer: the block's index, for a model with MoE blocks (None: a dense block)."""
    h, e, a = cfg.d_model, element_bytes, cfg.n_heads
    q, kv, f = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.d_ff
    norms = 2 * ((FP32_BYTES + e) * h + FP32_BYTES)
    matmul_inputs = 2 * e * h
    mlp = moe_mlp_bytes_per_token(cfg, e) if layer is not None and cfg.is_moe_layer(layer) else 4 * e * f
    split = 2 * e * q + 2 * e * kv + FP32_BYTES * a + mlp
    return (norms / (tp if sequence_parallel else 1)) + matmul_inputs + split / tp


def checkpointed_block_bytes_per_token(cfg: ModelConfig, tp: int = 1, sequence_parallel: bool = False,
                                       element_bytes: int = 2) -> float:
    """A recomputed block keeps only its input (Korthikanti's full recomputation): e·h per token, /tp with SP."""
    return element_bytes * cfg.d_model / (tp if sequence_parallel else 1)


def loss_bytes(cfg: ModelConfig, tokens: int, tp: int = 1, element_bytes: int = 2) -> float:
    """Peak bytes of the last stage around the fused LM head + loss (llm/chunked_loss.py) over `tokens` rows, on one
    of `tp` ranks, each holding V' = vocab/tp columns of a chunk, with e = element_bytes:

      * per token: the final RMSNorm keeps (4 + e)·h, the head's input is e·h, and the loss keeps the input's
        gradient, e·h, for the whole pass; it also keeps the weight's gradient in fp32, 4·V'·h;
      * one chunk of r = min(CHUNK_ROWS, tokens) rows peaks at the larger of two moments: the log-sum-exp (the
        e-byte logits, their fp32 copy and torch's fp32 temporary of the shifted logits: (e + 8)·r·V') and the
        weight gradient (the logits, their fp32 copy, softmax − one-hot in e bytes: (2e + 4)·r·V'; the input
        gradient's chunk e·r·h; the chunk's weight gradient in e bytes and in fp32: (e + 4)·V'·h). In fp32 the
        copies are the logits themselves: 8·r·V' and 4·r·V' + 4·r·h + 4·V'·h;
      * the loss's backward holds the saved gradients and their scaled copies, 2e·h per token + 2e·V'·h; the larger
        of the forward and the backward counts.
    tests/llm/cost/test_activations.py checks the forward's peak against torch's allocator."""
    h, e, v = cfg.d_model, element_bytes, cfg.vocab_size / tp
    r = min(CHUNK_ROWS, tokens)
    copies = e < FP32_BYTES  # bf16/fp16: the fp32 logits and the e-byte gradient are tensors of their own
    logits = e * r * v + copies * FP32_BYTES * r * v
    lse = logits + FP32_BYTES * r * v
    grads = logits + copies * e * r * v + e * r * h + (copies * e + FP32_BYTES) * v * h
    forward = e * h * tokens + FP32_BYTES * v * h + max(lse, grads)
    backward = 2 * e * h * tokens + 2 * e * v * h
    return ((FP32_BYTES + e) * h + e * h) * tokens + max(forward, backward)


def document_mask_bytes(cfg: ModelConfig, micro_batch_size: int) -> int:
    """data.document_mask: the (seq × seq) boolean mask of each micro-batch row, 1 byte per element, built once per
    forward pass and held by every layer's attention until the backward. Whole on every rank: under context
    parallelism each rank attends over the whole sequence (for its heads)."""
    return micro_batch_size * cfg.seq_len ** 2


def embedding_bytes_per_token() -> float:
    """The first stage keeps the token ids for the embedding's backward."""
    return TOKEN_ID_BYTES
