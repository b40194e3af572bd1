"""The backend contract (llm/train/backend.py): the loop uses nothing but `Backend`'s members, both backends
implement all of them, and MFU/HFU come from one formula (llm.cost.flops.mfu_from_flops)."""
from __future__ import annotations

import inspect
import json

import pytest
import torch

from llm.config import ModelConfig, RunConfig, TrainConfig
from llm.cost.flops import mfu_from_flops
from llm.train.backend import Backend, Throughput
from llm.train.runtime import StepResult
from llm.train.single_process import SingleProcessBackend
from llm.train.loop import train

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

# Backend's own members and those it inherits from the Runtime protocol (llm/train/runtime.py).
CONTRACT = [c for c in Backend.__mro__ if c.__module__.startswith("llm.")]
METHODS = sorted({n for c in CONTRACT for n, v in vars(c).items() if inspect.isfunction(v) and not n.startswith("_")})
ATTRIBUTES = sorted({a for c in CONTRACT for a in vars(c).get("__annotations__", {})})


def test_the_contract_is_the_runtime_and_the_loops_steps():
    assert [c.__name__ for c in CONTRACT] == ["Backend", "Runtime"]
    assert METHODS == ["any_rank", "barrier", "can_reshard", "close", "diagnose_nonfinite", "eval_loss",
                       "first_rank_with", "gather", "gather_rows", "load", "prepare", "save", "shard", "sum",
                       "train_step"]
    assert ATTRIBUTES == ["device", "dp_rank", "dp_size", "is_main", "layout", "rank", "routing", "world"]


def test_both_backends_implement_the_whole_contract():
    from parallel.engine import DeepSpeedBackend
    for cls in (SingleProcessBackend, DeepSpeedBackend):
        missing = [m for m in METHODS if not inspect.isfunction(getattr(cls, m, None))]
        assert missing == [], cls
    # DeepSpeedBackend sets its attributes in __init__s (a process group is needed); SingleProcessBackend's are fixed.
    source = "".join(inspect.getsource(c.__init__) for c in DeepSpeedBackend.__mro__ if "__init__" in vars(c)
                     and c.__module__.startswith("parallel."))
    assert all(f"self.{a}" in source for a in ATTRIBUTES)
    local = SingleProcessBackend(_cfg(), torch.device("cpu"))
    assert (local.rank, local.dp_rank, local.dp_size, local.is_main, local.layout) == (0, 0, 1, True,
                                                                                       {"backend": "local"})
    assert local.any_rank(True) and not local.any_rank(False)
    assert local.first_rank_with(True) == 0 and local.first_rank_with(False) is None
    assert local.can_reshard({"backend": "local"}, {"backend": "deepspeed"})[0] is False


class ContractOnly:
    """A backend with just the members the loop uses (no prepare, no gathers): anything else the loop asked for would
    raise here (AssertionError, which getattr(..., default) does not swallow)."""

    rank, dp_rank, dp_size, is_main, layout, routing = 0, 0, 1, True, {"backend": "contract"}, None

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        raise AssertionError(f"the loop asked the backend for {name!r}, which is not in the Backend contract")

    def train_step(self, micro_batches, lr):
        self.calls.append("train_step")
        return StepResult(loss=1.0, grad_norm=0.5)

    def eval_loss(self, micro_batches):
        self.calls.append("eval_loss")
        return 2.0

    def save(self, path):
        self.calls.append("save")

    def load(self, path):
        self.calls.append("load")

    def barrier(self):
        self.calls.append("barrier")

    def any_rank(self, flag):
        return flag

    def first_rank_with(self, flag):
        return 0 if flag else None

    def diagnose_nonfinite(self):
        return None

    def can_reshard(self, saved, current):
        return False, "no"


def _cfg(tmp_path=None) -> RunConfig:
    cfg = RunConfig(model=ModelConfig(n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, d_ff=64, vocab_size=64,
                                      seq_len=8),
                    train=TrainConfig(max_steps=3, global_batch_size=4, micro_batch_size=2, eval_every=0,
                                      eval_batches=1), out_dir=str(tmp_path or "unused"))
    cfg.checkpoint.dir = f"{cfg.out_dir}/checkpoints"
    return cfg


@pytest.mark.parametrize("hw_factor", [1.0, 1.5])
def test_the_loop_drives_any_object_with_the_contract(tmp_path, hw_factor):
    cfg = _cfg(tmp_path)
    samples = [torch.arange(9) % 64 for _ in range(16)]
    backend = ContractOnly()
    throughput = Throughput(flops_per_token=1e6, hardware_flops_per_token=hw_factor * 1e6, peak_flops=1e9,
                            n_devices=2)
    outcome = train(cfg, backend, samples, samples, throughput)
    assert (outcome.status, outcome.step, outcome.eval_loss) == ("finished", 3, 2.0)
    assert backend.calls.count("train_step") == 3 and "save" in backend.calls and "barrier" in backend.calls
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "loss" in r)
    assert step["mfu"] == mfu_from_flops(step["tokens_per_s"], 1e6, 1e9, 2)
    assert ("hfu" in step) == (hw_factor != 1.0)
    if hw_factor != 1.0:
        assert step["hfu"] == pytest.approx(hw_factor * step["mfu"])
    state = json.loads((tmp_path / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert state["layout"] == {"backend": "contract"}
