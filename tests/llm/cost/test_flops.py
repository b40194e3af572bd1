"""FLOPs per token (PaLM App. B), MFU vs HFU, and the accelerator table."""
import pytest

from llm.config import ModelConfig
from llm.cost.flops import (PEAK_FLOPS, attention_flops_per_token, flops_per_token, hfu, hfu_flops_per_token,
                            layer_flops_per_token, mfu, mfu_from_flops, palm_flops_per_token, datasheet_peak_flops)
from llm.shape import count_matmul_params, count_params, layer_matmul_params

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_palm_540b_worked_example():
    # PaLM (arXiv:2204.02311) App. B: 540B parameters, L=118, H=48, Q=256, T=2048, 238.3K tokens/s on 6144
    # TPU v4 chips at 275 TFLOP/s: 45.7% MFU without the attention term, 46.2% with it (printed to 0.1%).
    peak = datasheet_peak_flops("tpu-v4")
    assert peak == 275e12
    without = mfu_from_flops(238.3e3, 6 * 540e9, peak, n_devices=6144)
    with_attn = mfu_from_flops(238.3e3, palm_flops_per_token(540e9, 118, 48, 256, 2048), peak, n_devices=6144)
    assert round(100 * without, 1) == 45.7
    assert round(100 * with_attn, 1) == 46.2


CFG = ModelConfig(n_layers=4, d_model=256, n_heads=4, n_kv_heads=2, vocab_size=1000, seq_len=128)


def test_flops_per_token_methods():
    assert flops_per_token(CFG, "6N") == 6 * count_params(CFG)
    assert flops_per_token(CFG, "palm") == 6 * count_matmul_params(CFG) + 12 * 4 * 4 * 64 * 128
    assert attention_flops_per_token(4, 4, 64, 128) == 12 * 4 * 4 * 64 * 128
    with pytest.raises(ValueError, match="6N"):
        flops_per_token(CFG, "kaplan")


def measured_matmul_flops(cfg: ModelConfig) -> int:
    """Torch's own count of the aten.mm/addmm/bmm FLOPs of one training step (forward and backward) of `cfg` on a
    (2, seq_len) batch. (On CPU the flop counter has no formula for the fused attention kernel, so only the
    matmuls are compared.)"""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from llm.model import Transformer

    torch.manual_seed(0)
    model = Transformer(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    with FlopCounterMode(display=False) as counter:
        model(tokens).float().sum().backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return sum(n for op, n in counts.items() if op in ("aten.mm", "aten.addmm", "aten.bmm"))


def test_matmul_flops_match_torch_counter():
    # The matmul part of the formula, 6·N_matmul per token, against torch's own count of one training step.
    pytest.importorskip("torch")
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, vocab_size=128, seq_len=32)
    assert measured_matmul_flops(cfg) == 6 * count_matmul_params(cfg) * 2 * cfg.seq_len


def test_mfu_and_hfu_kept_apart():
    peak = datasheet_peak_flops("h100")
    tps = 1e5
    assert mfu(tps, CFG, peak) == pytest.approx(tps * flops_per_token(CFG) / peak)
    assert hfu(tps, CFG, peak) == mfu(tps, CFG, peak)  # no recomputation: identical
    full = hfu(tps, CFG, peak, recomputed_layers=CFG.n_layers)
    blocks = count_matmul_params(CFG) - CFG.vocab_size * CFG.d_model
    extra_forward = 2 * blocks + 4 * CFG.n_layers * CFG.n_heads * CFG.head_dim * CFG.seq_len
    assert full - mfu(tps, CFG, peak) == pytest.approx(tps * extra_forward / peak)
    assert mfu(tps, CFG, peak, n_devices=8) == pytest.approx(mfu(tps, CFG, peak) / 8)
    with pytest.raises(ValueError):
        hfu(tps, CFG, peak, recomputed_layers=5)


def test_peak_table():
    assert datasheet_peak_flops("H100") == datasheet_peak_flops("h100-sxm") == 989.4e12
    assert datasheet_peak_flops("a100", "fp32") == 19.5e12
    assert datasheet_peak_flops("h200") == datasheet_peak_flops("h100")
    for table in PEAK_FLOPS.values():
        assert all(1e12 < v < 2e15 for v in table.values())
    with pytest.raises(ValueError, match="known: .*h100"):
        datasheet_peak_flops("b9000")
    with pytest.raises(ValueError, match="no bf16"):
        datasheet_peak_flops("v100", "bf16")


@pytest.mark.parametrize("cfg", [CFG, ModelConfig(n_layers=3, d_model=250, n_heads=4, head_dim=64, n_kv_heads=2,
                                                  d_ff=512, vocab_size=77, seq_len=64)])
def test_per_layer_flops_sum_to_the_model(cfg):
    # PaLM App. B per block (6·N_layer + 12·H·Q·T), n_layers of them, plus 6× the output projection.
    assert cfg.n_layers * layer_flops_per_token(cfg) + 6 * cfg.vocab_size * cfg.d_model == flops_per_token(cfg)
    assert layer_flops_per_token(cfg) == 6 * layer_matmul_params(cfg) + attention_flops_per_token(
        1, cfg.n_heads, cfg.head_dim, cfg.seq_len)
    # HFU's recomputation is one forward (a third) of a block per recomputed layer.
    assert hfu_flops_per_token(cfg, 2) - flops_per_token(cfg) == pytest.approx(2 * layer_flops_per_token(cfg) / 3)
