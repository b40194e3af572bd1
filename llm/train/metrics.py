"""Metrics: one JSON object per line in <out_dir>/metrics.jsonl, and a readable console line.

Only the main rank writes. On resume, rows past the resumed step are dropped first, so the file always
describes one continuous run (a requeued job continues the curve instead of duplicating steps).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _fmt(key: str, value) -> str:
    if key == "tokens_per_s":
        return f"{value / 1000:.1f}k tok/s" if value >= 1000 else f"{value:.0f} tok/s"
    if key == "mfu":
        return f"mfu {100 * value:.1f}%"
    if key == "lr":
        return f"lr {value:.2e}"
    if isinstance(value, float):
        return f"{key} {value:.4f}"
    return f"{key} {value}"


class MetricsLogger:
    CONSOLE_KEYS = ("loss", "eval_loss", "lr", "tokens_per_s", "mfu", "grad_norm", "loss_scale")

    def __init__(self, path: Path, enabled: bool = True, resume_step: int = 0, stream=sys.stdout):
        self.enabled, self.stream = enabled, stream
        self.start = time.time()
        self.file = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in keep))
        self.file = path.open("a")

    def log(self, row: dict, console: str | None = None) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if console:
            parts = [console] + [_fmt(k, row[k]) for k in self.CONSOLE_KEYS if k in row]
            print(" | ".join(parts) + f" | {time.time() - self.start:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
