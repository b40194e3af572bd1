import math

import pytest
import torch

from llm.config import ModelConfig
from llm.model import Transformer, sample_next

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CFG = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, vocab_size=97, seq_len=32)


def test_init_is_deterministic_per_seed_and_name():
    a, b, c = Transformer(CFG, seed=3), Transformer(CFG, seed=3), Transformer(CFG, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.layers[0].attn.wq.weight, c.layers[0].attn.wq.weight)
    # Residual output projections are scaled by 1/sqrt(2·n_layers) (GPT-2).
    ratio = float(a.layers[0].attn.wo.weight.detach().std() / a.layers[0].attn.wq.weight.detach().std())
    assert ratio == pytest.approx(1 / math.sqrt(4), rel=0.1)


def test_tied_embeddings_share_one_tensor():
    m = Transformer(ModelConfig(**{**CFG.__dict__, "tie_embeddings": True}))
    assert m.lm_head.weight is m.tok_embeddings.weight
    untied = Transformer(CFG)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in m.parameters()) == 97 * 64


def test_causality():
    m = Transformer(CFG).eval()
    x = torch.randint(0, 97, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 97
    with torch.no_grad():
        assert torch.allclose(m(x)[:, :8], m(y)[:, :8], atol=1e-6)


def test_gqa_equals_mha_with_repeated_kv_heads():
    """GQA with kv weights w is MHA whose kv heads are each group's shared head repeated."""
    gqa = Transformer(CFG).eval()
    mha_cfg = ModelConfig(**{**CFG.__dict__, "n_kv_heads": 4})
    mha = Transformer(mha_cfg).eval()
    sd = gqa.state_dict()
    hd = CFG.head_dim
    for k in list(sd):
        if k.endswith(("attn.wk.weight", "attn.wv.weight")):
            sd[k] = sd[k].view(2, hd, 64).repeat_interleave(2, dim=0).reshape(4 * hd, 64)
    mha.load_state_dict(sd)
    x = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        assert torch.allclose(gqa(x), mha(x), atol=1e-5)


def test_kv_cache_matches_full_forward():
    m = Transformer(CFG).eval()
    x = torch.randint(0, 97, (3, 20))
    with torch.no_grad():
        full = m(x)
        caches = m.new_caches(3)
        parts = [m(x[:, :7], caches, 0), m(x[:, 7:8], caches, 7), m(x[:, 8:], caches, 8)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_greedy_generate_equals_argmax_loop():
    m = Transformer(CFG)
    prompt = torch.randint(0, 97, (2, 5))
    out = m.generate(prompt, 10, temperature=0)
    ref = prompt
    with torch.no_grad():
        for _ in range(10):
            ref = torch.cat([ref, m(ref)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)
    assert m.training  # generate restores the mode


def test_generate_stops_at_seq_len_and_eos():
    m = Transformer(CFG)
    assert m.generate(torch.zeros(1, 30, dtype=torch.long), 10).shape == (1, 32)
    out = m.generate(torch.zeros(2, 3, dtype=torch.long), 20, eos_id=5,
                     generator=torch.Generator().manual_seed(0), temperature=5.0)
    for row in out[:, 3:]:
        hits = (row == 5).nonzero()
        if len(hits):
            assert (row[hits[0, 0]:] == 5).all()  # after EOS only EOS


def test_top_k_and_top_p_filter():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    ks = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert ks == {0, 1}
    # softmax ≈ [.72, .26, .013, .005]: top_p=0.5 keeps only the first token, 0.9 the first two.
    assert {int(sample_next(logits, 1.0, top_p=0.5, generator=g)) for _ in range(100)} == {0}
    assert {int(sample_next(logits, 1.0, top_p=0.9, generator=g)) for _ in range(300)} == {0, 1}
