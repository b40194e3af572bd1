"""The chunked linear + cross-entropy (llm/chunked_loss.py) equals the plain logits-then-loss path, loss and
gradients, and never allocates the full logits.

Tolerances (fp32): loss 1e-6 relative, gradients 1e-5 of their largest entry. The chunked path sums the loss
and the LM head's weight gradient chunk by chunk and forms softmax − one-hot itself, so only the order and
rounding of fp32 sums differ (measured: ~4e-7). bf16 autocast: 2e-2, bf16's rounding of the matmul outputs.
"""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from llm.chunked_loss import linear_cross_entropy
from llm.config import ModelConfig
from llm.model import Transformer, cross_entropy_loss

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CFG = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=512, seq_len=32)


def _inputs(n=150, d=64, v=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, requires_grad=True)
    w = (torch.randn(v, d, generator=g) * 0.1).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    t[::7] = -100  # ignored positions (padding, prompt tokens) get no loss and no gradient
    return h, w, t


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("chunk_rows", [1, 16, 37, 150, 4096])
def test_equals_plain_loss_and_gradients(chunk_rows):
    h, w, t = _inputs()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ours = linear_cross_entropy(h, w, t, chunk_rows=chunk_rows)
    ours.backward()
    ref = cross_entropy_loss(F.linear(h2, w2)[None], t[None])
    ref.backward()
    assert abs(ours.item() - ref.item()) / ref.item() < 1e-6
    assert _rel(h.grad, h2.grad) < 1e-5 and _rel(w.grad, w2.grad) < 1e-5


def test_upstream_gradient_scales_and_no_grad_path_matches():
    h, w, t = _inputs()
    (3.0 * linear_cross_entropy(h, w, t, chunk_rows=16)).backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (3.0 * cross_entropy_loss(F.linear(h2, w2)[None], t[None])).backward()
    assert _rel(h.grad, h2.grad) < 1e-5 and _rel(w.grad, w2.grad) < 1e-5
    with torch.no_grad():
        assert abs(linear_cross_entropy(h, w, t, chunk_rows=16).item() - cross_entropy_loss(
            F.linear(h, w)[None], t[None]).item()) < 1e-5


@pytest.mark.parametrize("tie", [False, True])
def test_model_compute_loss_equals_logits_path(tie):
    cfg = dataclasses.replace(CFG, tie_embeddings=tie)
    model = Transformer(cfg, seed=1)
    ref = copy.deepcopy(model)
    x = torch.randint(0, cfg.vocab_size, (3, cfg.seq_len + 1), generator=torch.Generator().manual_seed(2))
    ours = model.compute_loss(x[:, :-1], x[:, 1:])
    ours.backward()
    plain = cross_entropy_loss(ref(x[:, :-1]), x[:, 1:])
    plain.backward()
    assert abs(ours.item() - plain.item()) / plain.item() < 1e-6
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert _rel(p.grad, q.grad) < 1e-5, name


def test_bf16_autocast_tracks_plain():
    h, w, t = _inputs()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(h, w, t, chunk_rows=16)
        ref = cross_entropy_loss(F.linear(h2, w2)[None], t[None])
    ours.backward()
    ref.backward()
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32
    assert abs(ours.item() - ref.item()) / ref.item() < 2e-2
    assert _rel(h.grad, h2.grad) < 2e-2 and _rel(w.grad, w2.grad) < 2e-2


def _largest_allocation(fn) -> int:
    """Bytes of the largest single CPU allocation made while running fn() and its backward (torch.profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn().backward()
    return max(e.cpu_memory_usage for e in prof.events())


def test_full_logits_never_allocated():
    n, v = 512, 4096
    h, w, t = _inputs(n=n, v=v)
    logits_bytes = n * v * 4
    assert _largest_allocation(lambda: cross_entropy_loss(F.linear(h, w)[None], t[None])) >= logits_bytes
    h.grad = w.grad = None
    assert _largest_allocation(lambda: linear_cross_entropy(h, w, t, chunk_rows=64)) <= logits_bytes // 4


def test_fp16_autocast_takes_the_plain_path():
    """Under fp16 the gradient must be formed after the loss scale (backward), so no chunked Function is used:
    fp16 autocast, or fp16 weights (DeepSpeed's fp16, e.g. a pipeline's last stage)."""
    h, w, t = _inputs()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = linear_cross_entropy(h, w, t, chunk_rows=16)
    assert "LinearCrossEntropy" not in type(loss.grad_fn).__name__
    assert "LinearCrossEntropy" not in type(linear_cross_entropy(h.half(), w.half(), t, chunk_rows=16).grad_fn).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "LinearCrossEntropy" in type(linear_cross_entropy(h, w, t, chunk_rows=16).grad_fn).__name__
