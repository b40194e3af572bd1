"""train.compile: per-block torch.compile trains like eager (fp32 tolerance), keeps names, generate() and the layouts.

Tolerance: 1e-5 relative on every step's loss, the layout-equivalence tests' fp32 bound. Inductor fuses the
elementwise ops of a block (RMSNorm, rotary, SwiGLU) and so reorders their float sums, which moves a loss of ~6
by a few ulps per step. Measured with the launcher config of tests/parallel (5 steps): debug mode 4e-8, DP2 ZeRO-1
2e-8, ZeRO-2 2e-8, ZeRO-3 4e-8, TP2 4e-8, PP2 6e-8, DP2 with full activation checkpointing 4e-8; no layout had to be
refused. The launcher test below runs ZeRO-1 (the cheapest); the others take 40-110 s each.
Compiling costs ~15-60 s per process on 2 CPU cores (less once inductor's on-disk cache is warm).
"""
import pytest
import torch
import torch.nn.functional as F

from llm.chunked_loss import chunk_loss_and_grads, linear_cross_entropy
from llm.config import ModelConfig, OptimConfig, RunConfig, TrainConfig
from llm.model import cross_entropy_loss
from llm.train.single_process import SingleProcessBackend
from tests.parallel.launcher_utils import (launcher_config_dict, loss_table, max_rel_diff, run_deepspeed, run_single,
                                           train_losses, write_config)

FP32_TOL = 1e-5
MODEL = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=512, seq_len=32)


def _backend(compile: bool) -> SingleProcessBackend:
    cfg = RunConfig(model=MODEL, optim=OptimConfig(lr=3e-3, warmup_steps=0),
                    train=TrainConfig(max_steps=20, global_batch_size=4, micro_batch_size=2, compile=compile))
    return SingleProcessBackend(cfg, torch.device("cpu"))


@pytest.fixture(scope="module")
def backends():
    return _backend(False), _backend(True)


def test_debug_mode_compiled_losses_match_eager_over_20_steps(backends):
    eager, compiled = backends
    gen = torch.Generator().manual_seed(0)
    # The same two micro-batches every step: the models memorise them, so the losses compared fall steeply.
    batches = [torch.randint(0, MODEL.vocab_size, (2, MODEL.seq_len + 1), generator=gen) for _ in range(2)]
    losses = []
    for step in range(20):
        a, b = eager.train_step(batches, 3e-3), compiled.train_step(batches, 3e-3)
        assert abs(b.loss - a.loss) / abs(a.loss) < FP32_TOL, (step, a.loss, b.loss)
        assert abs(b.grad_norm - a.grad_norm) / a.grad_norm < 1e-4, (step, a.grad_norm, b.grad_norm)
        losses.append(a.loss)
    assert losses[-1] < losses[0] - 1.0, losses

def test_compiled_model_keeps_names_and_generate(backends):
    eager, compiled = backends
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())
    compiled.model.load_state_dict(eager.model.state_dict())
    prompt = torch.randint(0, MODEL.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    # generate() runs the blocks eagerly (a KV cache is passed), so it is the eager model's token for token.
    assert torch.equal(compiled.model.generate(prompt, 8, temperature=0),
                       eager.model.generate(prompt, 8, temperature=0))


def test_compiled_loss_chunk_step_is_one_graph_and_matches_the_plain_loss():
    # fullgraph=True raises on any graph break: the chunk step must trace whole (no data-dependent shapes).
    step = torch.compile(chunk_loss_and_grads, fullgraph=True)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(150, 64, generator=g, requires_grad=True)
    w = (torch.randn(512, 64, generator=g) * 0.1).requires_grad_()
    t = torch.randint(0, 512, (150,), generator=g)
    t[::7] = -100  # ignored rows, in every chunk
    loss = linear_cross_entropy(h, w, t, chunk_rows=64, step=step)  # chunks of 64, 64 and a remainder of 22
    loss.backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = cross_entropy_loss(F.linear(h2, w2)[None], t[None])
    ref.backward()
    assert abs(loss.item() - ref.item()) / ref.item() < 1e-6
    for ours, theirs in ((h.grad, h2.grad), (w.grad, w2.grad)):
        assert (ours - theirs).abs().max() / theirs.abs().max() < 1e-5


def test_compiled_eval_loss_matches_eager(backends):
    eager, compiled = backends
    compiled.model.load_state_dict(eager.model.state_dict())
    batches = [torch.randint(0, MODEL.vocab_size, (2, MODEL.seq_len + 1), generator=torch.Generator().manual_seed(2))]
    a, b = eager.eval_loss(batches), compiled.eval_loss(batches)
    assert abs(b - a) / a < FP32_TOL, (a, b)


def test_launcher_zero1_compiled_matches_debug_mode_eager(tiny_data, tmp_path):
    data = tiny_data
    config = write_config(tmp_path / "cfg.yaml", launcher_config_dict(data, tmp_path / "unused"))
    run_single(config, tmp_path / "eager")
    run_deepspeed(config, tmp_path / "zero1-compiled", 2, ["parallel.zero_stage=1", "train.compile=true"],
                  timeout=600)
    ref, losses = train_losses(tmp_path / "eager"), train_losses(tmp_path / "zero1-compiled")
    assert len(losses) == 5
    assert max_rel_diff(ref, losses) < FP32_TOL, loss_table(ref, {"zero1-compiled": losses})
