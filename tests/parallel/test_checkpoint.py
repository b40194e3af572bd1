"""Checkpoints under the DeepSpeed launcher: exact resume, resharding across layouts, consolidation.

Resharding works through the consolidated `model.pt` every checkpoint carries (parallel/consolidate.py):
the eval loss of the weights loaded into another layout must equal the original run's final eval loss.
Tolerance 1e-6 relative: the weights are bit-identical, only the evaluation's reduction order changes
with the layout.
"""
import json
import shutil

import pytest
import torch

from tests.parallel.launcher_utils import (LaunchError, eval_losses, launcher_config_dict, run_deepspeed, run_single,
                                           train_losses, write_config)


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory, tiny_data):
    """DP2 ZeRO-3, 5 steps, checkpoints at steps 3 and 5, dropout on (so resume must restore the RNG too)."""
    root = tmp_path_factory.mktemp("ckpt")
    data = tiny_data
    cfg = launcher_config_dict(data, root / "unused", model={"dropout": 0.1},
                               checkpoint={"every": 3, "keep": 3})
    config = write_config(root / "cfg.yaml", cfg)
    run_deepspeed(config, root / "z3", 2, ["parallel.zero_stage=3"])
    return root, config


def test_resume_under_zero3_reproduces_losses(zero3_run):
    root, config = zero3_run
    full = train_losses(root / "z3")
    resumed = root / "z3-resumed"
    shutil.copytree(root / "z3", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000005")
    run_deepspeed(config, resumed, 2, ["parallel.zero_stage=3", f"checkpoint.dir={resumed / 'checkpoints'}"])
    again = train_losses(resumed)
    # Same layout, same order of every operation: DeepSpeed's fp32 path is deterministic on CPU.
    assert again == full


def test_consolidated_weights_reshard_to_other_layouts(zero3_run):
    root, config = zero3_run
    final = eval_losses(root / "z3")[5]
    ckpt = root / "z3" / "checkpoints" / "step_00000005"
    sd = torch.load(ckpt / "model.pt", weights_only=True)
    assert sd["tok_embeddings.weight"].shape == (512, 64)  # full, not a ZeRO-3 partition
    init = f"checkpoint.init_from={ckpt}"
    run_single(config, root / "as-debug", [init, "--eval-only"])
    run_deepspeed(config, root / "as-tp2", 2, [init, "parallel.tensor=2", "--eval-only"])
    for out in ("as-debug", "as-tp2"):
        got = json.loads((root / out / "eval.json").read_text())["eval_loss"]
        assert got == pytest.approx(final, rel=1e-6), out


def test_resume_in_another_layout_is_refused_with_the_way_out(zero3_run):
    root, config = zero3_run
    other = root / "z3-other"
    shutil.copytree(root / "z3", other)
    with pytest.raises(LaunchError) as e:
        run_single(config, other, [f"checkpoint.dir={other / 'checkpoints'}", "train.max_steps=6"])
    assert "saved with layout" in str(e.value) and "checkpoint.init_from=" in str(e.value)


def test_consolidate_command_writes_a_model_that_generates(zero3_run, tmp_path):
    import subprocess
    import sys
    from llm.config import load_config
    from llm.model import Transformer
    from tests.parallel.launcher_utils import ROOT
    root, _ = zero3_run
    ckpt = root / "z3" / "checkpoints" / "step_00000005"
    out = tmp_path / "model.pt"
    r = subprocess.run([sys.executable, str(ROOT / "launch" / "consolidate.py"), str(ckpt), "--output", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    model = Transformer(load_config(ckpt / "config.yaml").model)
    model.load_state_dict(torch.load(out, weights_only=True))
    assert torch.equal(model.tok_embeddings.weight, torch.load(ckpt / "model.pt")["tok_embeddings.weight"])
    assert model.generate(torch.zeros(1, 4, dtype=torch.long), 8, temperature=0).shape == (1, 12)
    bad = subprocess.run([sys.executable, str(ROOT / "launch" / "consolidate.py"), str(tmp_path), "--output",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
