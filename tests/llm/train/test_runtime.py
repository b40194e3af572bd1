"""llm/train/runtime.py: the one runtime contract, the single-process runtime, and the one optimizer step with its
non-finite diagnosis, which pretraining's backend and alignment's engines both take."""
from __future__ import annotations

import pytest
import torch

from llm.config import ConfigError, OptimConfig
from llm.train.runtime import SingleProcess, SingleProcessEngine, optimizer_step, shard
from llm.train.single_process import SingleProcessBackend
from typed_yaml.errors import TrainingDiverged

pytestmark = pytest.mark.unit


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def test_a_single_process_is_rank_0_of_1_and_its_collectives_are_the_identity():
    rt = SingleProcess()
    assert (rt.rank, rt.world, rt.dp_rank, rt.dp_size, rt.is_main) == (0, 1, 0, 1, True)
    t = torch.arange(6).reshape(3, 2)
    assert rt.shard(5) == slice(0, 5) and rt.sum(2.5) == 2.5 and rt.gather([1, "a"]) == [1, "a"]
    assert rt.gather_rows(t) is t and rt.any_rank(True) and rt.first_rank_with(False) is None
    # The pretraining backend is the same runtime with the loop's steps on top.
    assert issubclass(SingleProcessBackend, SingleProcess)


def test_shard_splits_contiguously_and_refuses_an_uneven_batch():
    assert [shard(6, r, 3) for r in range(3)] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    with pytest.raises(ConfigError, match="batch of 7 does not split over 2 data-parallel ranks"):
        shard(7, 0, 2)


def test_the_engine_step_equals_clip_grad_norm_and_adamw_by_hand():
    optim = OptimConfig(lr=1e-2, grad_clip=0.5, weight_decay=0.0)
    a, b = _model(), _model()
    engine = SingleProcessEngine(a, optim)
    reference = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                                  weight_decay=0.0)
    x = torch.randn(16, 4)
    for _ in range(3):
        for g in engine.optimizer.param_groups:
            g["lr"] = 1e-2
        result = engine.backward_step(a(x).pow(2).mean())
        b(x).pow(2).mean().backward()
        norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
        reference.step()
        reference.zero_grad()
        assert result.grad_norm == pytest.approx(float(norm), rel=1e-6) and result.nonfinite is None
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_a_nonfinite_gradient_is_named_and_the_weights_are_left_as_they_were():
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(2, 4)).sum()
    loss.backward()
    model[2].weight.grad[0, 3] = float("inf")
    result = optimizer_step(model, optimizer, grad_clip=1.0, loss=float(loss.detach()))
    assert result.nonfinite == "gradient of 2.weight" and result.grad_norm == float("inf")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())


def test_an_alignment_trainer_diverges_loudly_on_a_nan_loss():
    from llm.train.runtime import Trainer
    optim = OptimConfig(lr=1e-2)
    model = _model()
    trainer = Trainer(SingleProcess().prepare(model, optim, zero_stage=0), optim, total_steps=3)
    trainer.step(model(torch.randn(2, 4)).sum())  # a finite step first
    with pytest.raises(TrainingDiverged, match="at optimizer step 2 .*first non-finite: gradient of 0.weight"):
        trainer.step(model(torch.full((2, 4), float("nan"))).sum())
