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
    attention        3·e·q + 2·e·kv + 4·a
                     the rotated q, the attention output and the contiguous copy wo multiplies; the rotated
                     k and v; the log-sum-exp (fp32). The rotary multiply keeps only its cos/sin tables (the
                     projections' outputs are not needed for a gradient with respect to q).
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
tensors torch's autograd actually saves. No torch here.
"""
from __future__ import annotations

from llm.config import ModelConfig
from typed_yaml import ConfigError

KORTHIKANTI_2022 = "Korthikanti et al. 2022, arXiv:2205.05198"
FP32_BYTES = 4
TOKEN_ID_BYTES = 8
"""int64 token ids, kept by the embedding lookup for its backward."""


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
    split = 3 * e * q + 2 * e * kv + FP32_BYTES * a + mlp
    return (norms / (tp if sequence_parallel else 1)) + matmul_inputs + split / tp


def checkpointed_block_bytes_per_token(cfg: ModelConfig, tp: int = 1, sequence_parallel: bool = False,
                                       element_bytes: int = 2) -> float:
    """A recomputed block keeps only its input (Korthikanti's full recomputation): e·h per token, /tp with SP."""
    return element_bytes * cfg.d_model / (tp if sequence_parallel else 1)


def head_bytes_per_token(cfg: ModelConfig, tp: int = 1, element_bytes: int = 2) -> float:
    """Bytes per token of the last stage's peak around the loss: the final RMSNorm ((4 + e)·h), lm_head's input
    (e·h), and the logits. The loss is taken in fp32 (llm/model.py `cross_entropy_loss`). In the forward the
    e-byte logits, their fp32 copy and the fp32 log-softmax cross-entropy keeps are live together, (e + 8)·V;
    in the backward log-softmax's gradient holds its saved output, the incoming gradient and its result,
    12·V: the larger is the peak, split over tp by the vocab-parallel head."""
    h, e = cfg.d_model, element_bytes
    return (FP32_BYTES + e) * h + e * h + max(e + 2 * FP32_BYTES, 3 * FP32_BYTES) * cfg.vocab_size / tp


def embedding_bytes_per_token() -> float:
    """The first stage keeps the token ids for the embedding's backward."""
    return TOKEN_ID_BYTES
