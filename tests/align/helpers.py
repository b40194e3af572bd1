"""What several alignment tests share: a tiny base made by the chain's own base stage."""
from __future__ import annotations

from pathlib import Path

import torch

from llm.align.config import load_align_config
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"


def make_base(out: Path, steps: int = 20) -> Path:
    """Run the default recipe's base stage (pretraining `steps` steps, one thread) into `out`; returns `out`."""
    from llm.align.base_stage import run_base
    torch.set_num_threads(1)
    run_base(load_align_config(RECIPE, [f"out_dir={out}", f"base.steps={steps}"]), log=lambda s: None)
    return out
