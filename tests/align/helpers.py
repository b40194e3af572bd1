"""What several alignment tests share: a tiny base made by the chain's own base stage, and the console lines of code
that prints through typed_yaml/log.py where capsys cannot be used (a module-scoped fixture, a line that must stop
the stage)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from llm.align.config import load_align_config
from tests.conftest import ROOT
from typed_yaml import log

RECIPE = ROOT / "configs" / "align" / "default.yaml"


def make_base(out: Path, steps: int = 20) -> Path:
    """Run the default recipe's base stage (pretraining `steps` steps, one thread) into `out`; returns `out`."""
    from llm.align.base_stage import run_base
    torch.set_num_threads(1)
    run_base(load_align_config(RECIPE, [f"out_dir={out}", f"base.steps={steps}"]))
    return out


@contextmanager
def console_lines(hook: Callable[[str], None] | None = None):
    """A list of the lines typed_yaml/log.py `info` (and so `warning`) prints while inside, each still printed;
    `hook` is called with each line first (it may raise, to stop the code at that line)."""
    lines: list[str] = []
    printed = log.info

    def info(message: str) -> None:
        lines.append(message)
        if hook is not None:
            hook(message)
        printed(message)

    log.info = info
    try:
        yield lines
    finally:
        log.info = printed
