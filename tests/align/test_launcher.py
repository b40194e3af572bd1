"""SFT under the DeepSpeed launcher (2 CPU ranks, gloo, ZeRO-0 and ZeRO-2) against debug mode.

Tolerance 1e-4 relative on each step's loss: both layouts compute the same global-batch update (each rank
normalises its summed response-token loss by the global token count / world, DeepSpeed averages gradients
over the ranks), so only the order of floating-point sums differs, a few fp32 ulps per step compounded over
5 AdamW steps (the pretraining equivalence tests see < 1e-5 on the same model size)."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.parallel.launcher_utils import deepspeed_available, free_port, launch_env

RECIPE = ROOT / "configs" / "align" / "default.yaml"
TOL = 1e-4


def _losses(out_dir) -> list[float]:
    rows = (out_dir / "logs" / "sft.metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["loss"] for r in rows]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from llm.align.base import run_base
    from llm.align.config import load_align_config
    out = tmp_path_factory.mktemp("align_base")
    torch.set_num_threads(1)
    run_base(load_align_config(RECIPE, [f"out_dir={out}", "base.steps=20"]), log=lambda s: None)
    return out


def _run(cmd, timeout=300):
    proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.skipif(not deepspeed_available(), reason="deepspeed launcher not installed")
@pytest.mark.parametrize("zero", [0, 2])
def test_sft_data_parallel_matches_debug_mode(base_dir, tmp_path, zero):
    runs = {}
    for name in ("single", "ds"):
        out = tmp_path / name
        out.mkdir()
        for d in ("data", "base"):
            (out / d).symlink_to(base_dir / d)
        args = ["launch/sft.py", "--config", str(RECIPE), f"out_dir={out}", "sft.steps=5", "sft.batch_size=8",
                f"sft.optim.zero_stage={zero}"]
        if name == "single":
            _run([sys.executable, *args])
        else:
            _run(["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), *args])
        runs[name] = _losses(out)
    single, ds = runs["single"], runs["ds"]
    assert len(single) == len(ds) == 5
    rel = max(abs(a - b) / abs(a) for a, b in zip(single, ds))
    assert rel < TOL, (single, ds)
