"""llm/moe.py: the MoE feed-forward against a per-token reference, its auxiliary losses, routing statistics and the
config and layout rules that refuse what cannot be built."""
import pytest
import torch
import torch.nn.functional as F

from llm.config import ConfigError, ModelConfig, ParallelConfig
from llm.config.model import MoEConfig
from llm.model import SwiGLU, Transformer
from llm.moe import MoE, RouterStats, balance_loss, z_loss
from parallel.topology import check_layout


def tiny(**moe) -> ModelConfig:
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=64, seq_len=16,
                      moe=MoEConfig(**{"experts": 4, "top_k": 2, "expert_d_ff": 16, **moe}))
    cfg.validate()
    return cfg


def test_forward_equals_per_token_mixtral_routing_with_shared_expert():
    torch.manual_seed(0)
    moe = MoE(32, n_experts=4, top_k=2, expert_d_ff=16, shared_d_ff=16, swiglu=SwiGLU)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 5, 32)
    out = moe(x)
    for b in range(2):
        for t in range(5):
            h = x[b, t]
            probs = torch.softmax(moe.router(h), -1)
            w, idx = probs.topk(2)
            w = w / w.sum()
            e = moe.experts
            ref = sum(w[j] * ((F.silu(e.w_gate[i] @ h) * (e.w_up[i] @ h)) @ e.w_down[i].t()) for j, i in enumerate(idx))
            assert torch.allclose(out[b, t], ref + moe.shared(h), atol=1e-5)


def test_balance_loss_is_switch_formula_and_one_when_balanced():
    logits = torch.randn(64, 4)
    probs = logits.softmax(-1)
    chosen = probs.topk(2, -1).indices
    share = torch.bincount(chosen.flatten(), minlength=4).float() / chosen.numel()
    assert torch.allclose(balance_loss(logits, 2), 4 * (share * probs.mean(0)).sum())
    # Every expert picked equally often with uniform mean probability: the minimum, 1.
    balanced = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0], [1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
    assert balance_loss(balanced, 2).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[5.0, 4.0, 0.0, 0.0]] * 4)
    assert balance_loss(collapsed, 2).item() > 1.5
    assert z_loss(torch.zeros(3, 4)).item() == pytest.approx(torch.log(torch.tensor(4.0)).item() ** 2)


def test_aux_loss_trains_the_router_and_routing_is_recorded():
    cfg = tiny(aux_loss_coef=1.0)
    model = Transformer(cfg, seed=0)
    x = torch.randint(0, 64, (2, 9))
    model.hidden(x[:, :-1])
    aux = model.moe_loss()
    aux.backward()
    assert all(layer.mlp.router.weight.grad.abs().sum() > 0 for layer in model.layers)
    counts, entropy, tokens = model.routing.take()
    assert counts.shape == (2, 4) and counts.sum().item() == 2 * 2 * 8 * 2  # layers × batch × seq × top_k
    assert tokens == 16 and (entropy > 0).all()
    assert model.routing.take() is None  # taken once


def test_collapse_is_flagged_only_above_three_times_the_uniform_share():
    stats = RouterStats.from_counts(torch.tensor([[97, 1, 1, 1], [30, 25, 25, 20]]), torch.tensor([1.0, 2.0]), 2)
    assert [(layer, expert) for layer, expert, _ in stats.collapsed_layers()] == [(0, 0)]
    assert stats.dropped_tokens == 0


def test_every_k_layers_alternates_dense_and_moe_blocks():
    cfg = ModelConfig(n_layers=4, d_model=32, n_heads=4, vocab_size=64, seq_len=16,
                      moe=MoEConfig(experts=4, top_k=1, every_k_layers=2))
    model = Transformer(cfg)
    assert [type(layer.mlp).__name__ for layer in model.layers] == ["SwiGLU", "MoE", "SwiGLU", "MoE"]
    assert model.layers[1].mlp.experts.w_gate.shape == (4, cfg.d_ff, 32)  # expert_d_ff defaults to d_ff


@pytest.mark.parametrize("moe,message", [
    ({"top_k": 5}, "model.moe.top_k=5 must be between 1 and model.moe.experts=4"),
    ({"every_k_layers": 3}, "model.moe.every_k_layers=3 must be between 1 and model.n_layers=2"),
    ({"expert_d_ff": 0}, "model.moe.expert_d_ff=0 must be positive"),
    ({"aux_loss_coef": -1.0}, "model.moe.aux_loss_coef=-1.0 must be >= 0"),
])
def test_config_mistakes_are_one_line(moe, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        tiny(**moe)


@pytest.mark.parametrize("parallel,world,message", [
    ({"expert": 3, "zero_stage": 1}, 6, "parallel.expert=3 does not divide model.moe.experts=4"),
    ({"expert": 4, "zero_stage": 1}, 2, "parallel.expert=4 does not divide the data-parallel degree 2"),
    ({"expert": 2}, 2, "parallel.expert=2 needs parallel.zero_stage >= 1"),
    ({"tensor": 2}, 2, "model.moe cannot be combined with parallel.tensor=2"),
    ({"pipeline": 2}, 2, "model.moe cannot be combined with parallel.pipeline=2"),
])
def test_layout_mistakes_are_caught_before_any_process_group(parallel, world, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        check_layout((tiny(), ParallelConfig(**parallel)), world)


def test_expert_parallelism_needs_an_moe_model():
    dense = ModelConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=64, seq_len=16)
    with pytest.raises(ConfigError, match="parallel.expert=2 needs a mixture-of-experts model"):
        check_layout((dense, ParallelConfig(expert=2, zero_stage=1)), 2)
