"""Exact parameter counts (against published models and the real torch model) and the shape designer."""
import math

import pytest

from llm.config import ModelConfig
from llm.shape import (SMALL, TargetTooLarge, count_matmul_params, count_params, count_params_non_embedding,
                            design_shape, embedding_params, layer_matmul_params, layer_params)

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

# Published exact counts (the Hugging Face checkpoints' sum of numel) of models with our architecture.
LLAMA2_7B = ModelConfig(n_layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab_size=32000, seq_len=4096)
LLAMA2_70B = ModelConfig(n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672, vocab_size=32000,
                         seq_len=4096)
LLAMA3_8B = ModelConfig(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab_size=128256,
                        seq_len=8192)


@pytest.mark.parametrize("cfg,expected", [(LLAMA2_7B, 6_738_415_616), (LLAMA2_70B, 68_976_648_192),
                                          (LLAMA3_8B, 8_030_261_248)])
def test_published_counts(cfg, expected):
    assert count_params(cfg) == expected


def test_conventions():
    cfg = LLAMA2_7B
    assert count_params(cfg) - count_params_non_embedding(cfg) == embedding_params(cfg) == 2 * 32000 * 4096
    tied = ModelConfig(n_layers=2, d_model=64, n_heads=4, vocab_size=100, tie_embeddings=True)
    assert embedding_params(tied) == 100 * 64
    # Tied: the one shared matrix is the output projection's matmul weight; only the norms are left over.
    assert count_params(tied) - count_matmul_params(tied) == (2 * 2 + 1) * 64


GRID = [
    dict(n_layers=1, d_model=32, n_heads=2),
    dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2),
    dict(n_layers=3, d_model=64, n_heads=8, n_kv_heads=1, d_ff=100),
    dict(n_layers=2, d_model=96, n_heads=4, head_dim=16, vocab_size=77),  # head_dim decoupled from d_model
    dict(n_layers=2, d_model=64, n_heads=4, tie_embeddings=True),
    dict(n_layers=4, d_model=128, n_heads=4, n_kv_heads=4, d_ff=256, vocab_size=1000, tie_embeddings=True),
]


@pytest.mark.parametrize("kwargs", GRID)
def test_count_equals_torch_numel(kwargs):
    torch = pytest.importorskip("torch")
    from llm.model import Transformer

    cfg = ModelConfig(seq_len=16, **kwargs)
    torch.manual_seed(0)
    model = Transformer(cfg)
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())
    embedding = {id(p) for n, p in model.named_parameters() if n.startswith(("tok_embeddings", "lm_head"))}
    assert count_params_non_embedding(cfg) == sum(p.numel() for p in model.parameters() if id(p) not in embedding)


@pytest.mark.parametrize("target", [3e8, 1e9, 3e9, 7e9, 13e9, 70e9, 175e9, 1e12])
def test_design_shape_rules(target):
    cfg = design_shape(target)
    n = count_params(cfg)
    assert abs(math.log(n / target)) < math.log(1.05)
    assert cfg.head_dim in (64, 128) and cfg.n_heads * cfg.head_dim == cfg.d_model
    for tp in (1, 2, 4, 8):
        assert cfg.n_heads % tp == 0 and cfg.n_kv_heads % tp == 0 and cfg.d_ff % tp == 0 and cfg.vocab_size % tp == 0
    assert cfg.d_model % 128 == 0 and cfg.d_ff % 256 == 0 and cfg.vocab_size % 512 == 0
    assert 8 / 3 * cfg.d_model <= cfg.d_ff < 8 / 3 * cfg.d_model + 256
    # In the [64, 128] band from 1B up; below, widths step by 512 and the [32, 256] fallback may be needed.
    lo, hi = (64, 128) if target >= 1e9 else (32, 256)
    assert lo <= cfg.d_model / cfg.n_layers <= hi
    assert (cfg.n_kv_heads == 8) == (target >= 3e9)
    cfg.validate()


def test_design_shape_small_and_custom():
    cfg = design_shape(2e7, vocab_size=4096, seq_len=256, tp_degrees=(1,))
    assert cfg.vocab_size == 4096 and cfg.seq_len == 256
    assert abs(count_params(cfg) / 2e7 - 1) < 0.1
    assert design_shape(1e9, tie_embeddings=True).tie_embeddings


def test_design_shape_errors():
    with pytest.raises(ValueError, match="smallest shape"):
        design_shape(1e6, vocab_size=32000)
    with pytest.raises(ValueError, match="positive"):
        design_shape(-5)
    with pytest.raises(ValueError, match="tp_degrees"):
        design_shape(1e9, tp_degrees=(0,))


def test_per_layer_params_sum_to_the_model():
    for kwargs in GRID:
        cfg = ModelConfig(seq_len=16, **kwargs)
        assert layer_params(cfg) == layer_matmul_params(cfg) + 2 * cfg.d_model  # two RMSNorm gains
        assert cfg.n_layers * layer_matmul_params(cfg) + cfg.vocab_size * cfg.d_model == count_matmul_params(cfg)
        assert cfg.n_layers * layer_params(cfg) + cfg.d_model + embedding_params(cfg) == count_params(cfg)


def test_head_dim_decoupled_from_an_indivisible_d_model():
    # Llama-style attention projects d_model → n_heads·head_dim and back, so 4 heads of 64 fit d_model=250.
    torch = pytest.importorskip("torch")
    from llm.model import Transformer

    cfg = ModelConfig(n_layers=2, d_model=250, n_heads=4, head_dim=64, n_kv_heads=2, vocab_size=101, seq_len=16)
    cfg.validate()
    model = Transformer(cfg)
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())
    assert model.layers[0].attn.wq.weight.shape == (4 * 64, 250) and model.layers[0].attn.wo.weight.shape == (250, 256)
    assert model(torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))).shape == (2, cfg.seq_len, cfg.vocab_size)


def test_design_shape_splits_for_every_tp_degree():
    # 3 does not divide 256: d_ff is rounded to lcm(256, 3) so that TP=3 can still split the MLP.
    for target in (5e7, 3e8, 1e9):
        cfg = design_shape(target, vocab_size=4096, tp_degrees=(1, 3))
        assert cfg.n_heads % 3 == 0 and cfg.n_kv_heads % 3 == 0 and cfg.d_ff % 3 == 0 and cfg.vocab_size % 192 == 0


def test_design_shape_refuses_targets_past_the_largest_shape():
    with pytest.raises(TargetTooLarge, match="above the largest shape") as e:
        design_shape(1e15)
    largest = e.value.largest
    assert count_params(design_shape(largest * 1.05)) == largest  # within the 10% tolerance: that shape
    with pytest.raises(ValueError, match="no d_model"):
        design_shape(1e9, tp_degrees=(7, 11, 13))


def test_small_rules_build_cpu_scale_models_that_are_mostly_not_embeddings():
    """SMALL (for CPU-scale sweeps): 32-wide heads and steps, aspect ratios 8-128, every target from 60k to 3M
    within 15% and, from 150k up, more than half the parameters outside the embeddings at a 512-piece vocabulary."""
    with pytest.raises(ValueError, match="below the smallest shape"):  # STANDARD's smallest is ~170k here
        design_shape(1.0e5, vocab_size=512, seq_len=128, tp_degrees=(1,), pp_degrees=(1,))
    with pytest.raises(ValueError, match="below the smallest shape"):
        design_shape(3.0e4, vocab_size=512, seq_len=128, tp_degrees=(1,), pp_degrees=(1,), rules=SMALL)
    depths = set()
    for target in [6e4 * 1.5 ** i for i in range(10)]:
        cfg = design_shape(target, vocab_size=512, seq_len=128, tp_degrees=(1,), pp_degrees=(1,), rules=SMALL)
        n = count_params(cfg)
        assert abs(math.log(n / target)) <= math.log(1.15) + 1e-9, (target, cfg)
        assert cfg.head_dim == 32 and cfg.d_model % 32 == 0 and cfg.d_ff % 32 == 0
        assert cfg.d_ff >= 8 * cfg.d_model / 3 and 8 <= cfg.d_model / cfg.n_layers <= 128
        if target >= 1.5e5:
            assert count_params_non_embedding(cfg) > n / 2
        depths.add(cfg.n_layers)
    assert len(depths) >= 4
