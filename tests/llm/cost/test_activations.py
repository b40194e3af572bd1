"""Activation bytes: Korthikanti et al. 2022's equations (hand-computed), and our block's count against the tensors
torch's autograd actually saves."""
import pytest
import torch

from llm.config import ModelConfig
from llm.model import Block
from llm.chunked_loss import CHUNK_ROWS, linear_cross_entropy
from llm.cost import activations
from llm.cost.activations import (block_bytes_per_token, checkpointed_block_bytes_per_token, document_mask_bytes,
                                  korthikanti_layer_bytes, loss_bytes)
from tests.parallel.layout_memory_probe import allocator_peak

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_korthikanti_equations():
    # GPT-3 175B as in their Table 3: s=2048, h=12288, a=96, t=8, b=1.
    s, h, a, t = 2048, 12288, 96, 8
    sbh = s * h
    assert korthikanti_layer_bytes(s, 1, h, a) == pytest.approx(sbh * (34 + 5 * 96 * 2048 / 12288))  # 114 sbh
    assert korthikanti_layer_bytes(s, 1, h, a) == pytest.approx(114 * sbh)
    assert korthikanti_layer_bytes(s, 1, h, a, t) == pytest.approx(sbh * (10 + 3 + 10))  # 24/8 = 3, 80/8 = 10
    assert korthikanti_layer_bytes(s, 1, h, a, t, sequence_parallel=True) == pytest.approx(114 * sbh / 8)
    assert korthikanti_layer_bytes(s, 1, h, a, t, True, "selective") == pytest.approx(34 * sbh / 8)
    assert korthikanti_layer_bytes(s, 1, h, a, t, False, "full") == 2 * sbh
    with pytest.raises(ValueError):
        korthikanti_layer_bytes(s, 1, h, a, recompute="some")


def test_block_count_by_hand():
    cfg = ModelConfig(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, d_ff=384, vocab_size=1024, seq_len=32)
    # bf16: norms 2·(6·128 + 4), matmul inputs 4·128, attention 4·128 + 4·64 + 4·4, MLP 8·384.
    assert block_bytes_per_token(cfg) == 2 * (6 * 128 + 4) + 4 * 128 + 4 * 128 + 4 * 64 + 16 + 8 * 384
    # TP2: everything but the norms and the matmul inputs halves; SP halves the norms too.
    split = 4 * 128 + 4 * 64 + 16 + 8 * 384
    assert block_bytes_per_token(cfg, tp=2) == 2 * (6 * 128 + 4) + 4 * 128 + split / 2
    assert block_bytes_per_token(cfg, tp=2, sequence_parallel=True) == (6 * 128 + 4) + 4 * 128 + split / 2
    assert checkpointed_block_bytes_per_token(cfg) == 256


def test_chunked_loss_by_hand():
    """One chunk's logits, never the micro-batch's: beyond CHUNK_ROWS rows the loss grows by per-token terms only."""
    assert activations.CHUNK_ROWS == CHUNK_ROWS  # the cost model's copy of llm/chunked_loss.py's constant
    cfg = ModelConfig(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, d_ff=384, vocab_size=1024, seq_len=32)
    h, v = 128, 1024
    per_token = 6 * h + 2 * h  # the final norm's (4 + e)·h and the head's input e·h
    # bf16, 64 rows: the weight-gradient moment, (2e+4)·r·V + e·r·h + (e+4)·V·h, over grad_h and the fp32 grad_w.
    r = 64
    assert loss_bytes(cfg, r) == per_token * r + 2 * h * r + 4 * v * h + 8 * r * v + 2 * r * h + 6 * v * h
    # Past one chunk the (e + 8)·r·V of the log-sum-exp moment is fixed at r = CHUNK_ROWS.
    n = 8 * CHUNK_ROWS
    forward = 2 * h * n + 4 * v * h + max(10 * CHUNK_ROWS * v, 8 * CHUNK_ROWS * v + 2 * CHUNK_ROWS * h + 6 * v * h)
    assert loss_bytes(cfg, n) == per_token * n + max(forward, 4 * h * n + 4 * v * h)
    assert loss_bytes(cfg, 2 * n) - loss_bytes(cfg, n) < 20 * h * n  # per token, no V term
    # Tensor parallelism: each rank holds vocab/tp columns of the chunk and of the weight's gradient.
    assert loss_bytes(cfg, r, tp=2) < loss_bytes(cfg, r)
    assert document_mask_bytes(cfg, 2) == 2 * 32 * 32


@pytest.mark.parametrize("dtype,rows,vocab,d_model", [(torch.bfloat16, 64, 1024, 128), (torch.bfloat16, 512, 4096, 256),
                                                      (torch.bfloat16, 1024, 1024, 128),
                                                      (torch.float32, 512, 4096, 256)])
def test_chunked_loss_forward_is_what_the_allocator_peaks_at(dtype, rows, vocab, d_model):
    """llm/chunked_loss.py's forward (gradients included) against torch's CPU allocator, within 2%: the count less
    the per-token terms of the norm and the head's input, which are the caller's (here a leaf tensor)."""
    cfg = ModelConfig(n_layers=1, d_model=d_model, n_heads=4, d_ff=384, vocab_size=vocab, seq_len=rows)
    e = torch.finfo(dtype).bits // 8
    hidden = torch.randn(rows, d_model, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, d_model, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,))
    measured = allocator_peak(lambda: linear_cross_entropy(hidden, weight, targets))
    predicted = loss_bytes(cfg, rows, element_bytes=e) - (4 + 2 * e) * d_model * rows
    backward = 2 * e * d_model * rows + 2 * e * vocab * d_model
    assert predicted > backward  # the forward's moment is the count's, at these shapes
    assert measured == pytest.approx(predicted, rel=0.02)


def _saved_bytes(module, x) -> int:
    """Bytes of the distinct storages autograd saves in module(x), parameters and buffers excluded."""
    skip = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


@pytest.mark.parametrize("n_kv_heads,dtype", [(4, torch.bfloat16), (2, torch.bfloat16), (4, torch.float32)])
def test_block_count_is_what_autograd_saves(n_kv_heads, dtype):
    cfg = ModelConfig(n_layers=1, d_model=128, n_heads=4, n_kv_heads=n_kv_heads, d_ff=384, vocab_size=1024,
                      seq_len=32)
    block = Block(cfg).to(dtype)
    x = torch.randn(2, 32, 128, dtype=dtype, requires_grad=True)
    e = torch.finfo(dtype).bits // 8
    assert _saved_bytes(block, x) == block_bytes_per_token(cfg, element_bytes=e) * 2 * 32
