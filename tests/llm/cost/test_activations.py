"""Activation bytes: Korthikanti et al. 2022's equations (hand-computed), and our block's count against the tensors
torch's autograd actually saves."""
import pytest
import torch

from llm.config import ModelConfig
from llm.model import Block
from llm.cost.activations import (block_bytes_per_token, checkpointed_block_bytes_per_token, head_bytes_per_token,
                                  korthikanti_layer_bytes)

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
    # bf16: norms 2·(6·128 + 4), matmul inputs 4·128, attention 6·128 + 4·64 + 4·4, MLP 8·384.
    assert block_bytes_per_token(cfg) == 2 * (6 * 128 + 4) + 4 * 128 + 6 * 128 + 4 * 64 + 16 + 8 * 384
    # TP2: everything but the norms and the matmul inputs halves; SP halves the norms too.
    split = 6 * 128 + 4 * 64 + 16 + 8 * 384
    assert block_bytes_per_token(cfg, tp=2) == 2 * (6 * 128 + 4) + 4 * 128 + split / 2
    assert block_bytes_per_token(cfg, tp=2, sequence_parallel=True) == (6 * 128 + 4) + 4 * 128 + split / 2
    assert checkpointed_block_bytes_per_token(cfg) == 256
    assert head_bytes_per_token(cfg) == 6 * 128 + 2 * 128 + 12 * 1024  # log-softmax's backward: 3 fp32 buffers


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
