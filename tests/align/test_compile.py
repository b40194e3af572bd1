"""`compile: true`: the alignment stages train their models with per-block torch.compile (llm/train/compile.py).

Tolerance: 1e-5 relative on every logged loss, the fp32 bound of tests/llm/train/test_compile.py (inductor fuses a
block's elementwise ops and so reorders float sums by a few ulps per step). Every stage trains through
StageContext.trainer, where the blocks are compiled: SFT's run covers a Transformer, and a RewardModel (RM, PPO
critic) is checked to get its `.body` blocks compiled, without a second compiled training run (compiling costs tens
of seconds on 2 CPU cores).
"""
import json
import shutil

import pytest
import torch

from llm.align.config import load_align_config
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"
FP32_TOL = 1e-5


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from llm.align.base_stage import run_base
    out = tmp_path_factory.mktemp("compile_base")
    torch.set_num_threads(1)
    run_base(load_align_config(RECIPE, [f"out_dir={out}", "base.steps=10"]))
    return out


def _rows(out, stage):
    return [json.loads(line) for line in (out / "logs" / f"{stage}.metrics.jsonl").read_text().splitlines()]


def test_sft_losses_under_compile_equal_eager(base_dir, tmp_path):
    from llm.align.sft import run_sft
    from torch._dynamo.utils import counters
    rows, graphs = {}, {}
    for mode in ("eager", "compiled"):
        counters.clear()
        out = tmp_path / mode
        shutil.copytree(base_dir, out)
        cfg = load_align_config(RECIPE, [f"out_dir={out}", f"compile={mode == 'compiled'}", "sft.steps=4",
                                         "sft.optim.warmup_steps=0", "sft.eval_every=0", "task.n_eval_prompts=8"])
        run_sft(cfg)
        rows[mode] = [r["loss"] for r in _rows(out, "sft") if "loss" in r]
        graphs[mode] = counters["stats"]["unique_graphs"]
    assert graphs["eager"] == 0 and graphs["compiled"] > 0, graphs  # the compiled run did go through dynamo
    eager, compiled = rows["eager"], rows["compiled"]
    assert len(eager) == len(compiled) == 4
    worst = max(abs(a - b) / abs(a) for a, b in zip(eager, compiled))
    assert worst < FP32_TOL, (eager, compiled)


def test_a_reward_models_body_blocks_are_compiled(base_dir):
    """The RM and the PPO critic are RewardModels: their `.body` blocks are what compile_blocks replaces (the
    training run itself is test_sft_losses_under_compile_equal_eager's, on the Transformer's blocks)."""
    from llm.model import RewardModel
    from llm.align.stages import REGISTRY, StageContext
    cfg = load_align_config(RECIPE, [f"out_dir={base_dir}", "compile=true", "rm.init=" + str(base_dir / "base")])
    ctx = StageContext(cfg, REGISTRY["rm"])
    model = ctx.load("reward")[0]
    assert not any("forward" in vars(b) for b in model.body.layers)
    trainer = ctx.trainer(model, cfg.rm.optim, 0, 1)
    assert isinstance(trainer.module, RewardModel) and len(model.body.layers) == model.cfg.n_layers
    # compile_blocks sets each block's forward on the instance, dispatching cache-free calls to torch.compile's.
    compiled = [vars(b)["forward"].__defaults__[-1] for b in model.body.layers]
    assert all(hasattr(c, "_torchdynamo_orig_callable") for c in compiled)
