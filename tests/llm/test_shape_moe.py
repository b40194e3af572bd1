"""Exact parameter counts of mixture-of-experts models: total against the torch model and Mixtral, active by hand."""
import pytest

from llm.config import ModelConfig
from llm.config.model import MoEConfig
from llm.shape import (block_matmul_params, count_active_params, count_matmul_params, count_params,
                       count_params_non_embedding, expert_params, layer_matmul_params)

pytestmark = pytest.mark.unit

# Mixtral 8x7B (Jiang et al. 2024, arXiv:2401.04088): Llama-style blocks, 8 experts of width 14336, top-2.
MIXTRAL_8X7B = ModelConfig(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab_size=32000,
                           seq_len=4096, moe=MoEConfig(experts=8, top_k=2))

GRID = [
    dict(n_layers=2, d_model=64, n_heads=4, moe=dict(experts=4, top_k=2)),
    dict(n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, moe=dict(experts=6, top_k=1, expert_d_ff=32,
                                                                    shared_experts=2)),
    dict(n_layers=4, d_model=32, n_heads=2, d_ff=96, moe=dict(experts=8, top_k=3, expert_d_ff=16, every_k_layers=2)),
    dict(n_layers=2, d_model=64, n_heads=4, tie_embeddings=True, vocab_size=77,
         moe=dict(experts=3, top_k=3, shared_experts=1)),
]


def _cfg(kwargs) -> ModelConfig:
    kwargs = dict(kwargs)
    moe = MoEConfig(**kwargs.pop("moe"))
    return ModelConfig(seq_len=16, **kwargs, moe=moe)


def test_mixtral_total_is_the_published_count():
    # 46,702,792,704: the sum of numel of the Hugging Face Mixtral-8x7B checkpoint.
    assert count_params(MIXTRAL_8X7B) == 46_702_792_704


def test_mixtral_active_by_hand():
    d, layers = 4096, 32
    attention = 2 * d * d + 2 * d * 1024
    per_block = attention + d * 8 + 2 * 3 * d * 14336 + 2 * d  # router, two experts, two norms
    assert count_active_params(MIXTRAL_8X7B) == layers * per_block + d + 2 * 32000 * d
    assert count_matmul_params(MIXTRAL_8X7B) == layers * (attention + d * 8 + 2 * 3 * d * 14336) + 32000 * d


@pytest.mark.parametrize("kwargs", GRID)
def test_total_equals_torch_numel(kwargs):
    torch = pytest.importorskip("torch")
    from llm.model import Transformer
    cfg = _cfg(kwargs)
    torch.manual_seed(0)
    model = Transformer(cfg)
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())
    # Non-embedding: everything but tok_embeddings and an untied lm_head.
    emb = model.tok_embeddings.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())
    assert count_params_non_embedding(cfg) == count_params(cfg) - emb


@pytest.mark.parametrize("kwargs", GRID)
def test_active_counts_top_k_of_the_experts_torch_holds(kwargs):
    pytest.importorskip("torch")
    from llm.model import Transformer
    from llm.moe import MoE
    cfg = _cfg(kwargs)
    model = Transformer(cfg)
    unused = 0  # the routed experts a token skips: (E - top_k) / E of each MoE block's expert weights
    for layer in model.layers:
        if isinstance(layer.mlp, MoE):
            experts = sum(p.numel() for p in layer.mlp.experts.parameters())
            unused += experts * (cfg.moe.experts - cfg.moe.top_k) // cfg.moe.experts
    assert count_active_params(cfg) == count_params(cfg) - unused
    assert count_active_params(cfg, include_embeddings=False) == count_params_non_embedding(cfg) - unused
    linears = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "tok_embeddings" not in n)
    head = 0 if not cfg.tie_embeddings else model.lm_head.weight.numel()  # tied: counted once, as a matmul
    assert count_matmul_params(cfg) == linears + head - unused


def test_every_k_layers_keeps_dense_blocks():
    cfg = _cfg(GRID[2])
    assert [cfg.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert block_matmul_params(cfg, 0) == layer_matmul_params(cfg)
    assert block_matmul_params(cfg, 1) - block_matmul_params(cfg, 1, active=True) == 5 * expert_params(cfg)


def test_top_k_equal_to_experts_is_all_active():
    cfg = _cfg(GRID[3])
    assert count_active_params(cfg) == count_params(cfg)


def test_dense_model_unchanged():
    dense = ModelConfig(n_layers=3, d_model=64, n_heads=4)
    assert count_active_params(dense) == count_params(dense) == 3 * (2 * 64 + layer_matmul_params(dense)) + 64 \
        + 2 * 4096 * 64
    assert expert_params(dense) == 0
