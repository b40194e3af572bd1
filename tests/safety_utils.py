"""Crafted checkpoint files for the tests that a checkpoint is data, never code (llm/train/safe_load.py)."""
from __future__ import annotations

from pathlib import Path

import torch


class Payload:
    """Unpickling this object runs code: it touches `marker`. A test asserts the marker never appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",)


def plant(path: Path, marker: Path) -> Path:
    """Rewrite the torch.save file `path` with the payload hidden inside its real content (a state dict keeps
    its tensors, so only the pickle's globals give it away)."""
    from parallel.safe_checkpoint import allow_deepspeed_types
    allow_deepspeed_types()
    content = torch.load(path, map_location="cpu", weights_only=True)
    content = dict(content) if isinstance(content, dict) else {"content": content}
    content["__extra__"] = Payload(marker)
    torch.save(content, path)
    return path
