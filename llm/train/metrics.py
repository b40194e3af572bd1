"""Metrics: one JSON object per line in <out_dir>/metrics.jsonl, and a readable console line.

MFU and HFU are fractions of a peak; on a CPU that peak is measured (llm/train/hardware.py), and one measured too
low makes them exceed 100%, which no run can do. The console shows such a value as 'mfu n/a' (the training loop
says why, once) and launch/plot.py leaves it out; the file keeps the number as computed, with the peak it was
computed against in the run's start-up line, for a reader who wants it as a relative speed.

Only the main rank writes. On resume, rows past the resumed step are dropped first, so the file always
describes one continuous run (a requeued job continues the curve instead of duplicating steps). Every row
gets `time` (unix seconds) and goes, unchanged, to the TensorBoard / W&B sinks `logging` turns on (loggers.py).

The readers are here too (one owner of the format): `read_rows` for every row (strict for a finished file a user
names, lenient for one a live run is writing), and on it `last_train_row` and `final_eval_loss`, which the sweep
watches its points with (llm/sweep/).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from llm.config import ConfigError, LoggingConfig
from llm.train.loggers import open_sinks
from typed_yaml.disk import disk_full_as, disk_full_reason
from typed_yaml.files import read_jsonl
from typed_yaml.log import is_main


def _fmt(key: str, value) -> str:
    if key == "tokens_per_s":
        return f"{value / 1000:.1f}k tok/s" if value >= 1000 else f"{value:.0f} tok/s"
    if key == "mfu":
        shown = valid_utilisation(value)
        return "mfu n/a" if shown is None else f"mfu {100 * shown:.1f}%"
    if key == "lr":
        return f"lr {value:.2e}"
    if isinstance(value, float):
        return f"{key} {value:.4f}"
    return f"{key} {value}"


MFU_VALID_MAX = 1.0
"""MFU (or HFU) above this is not a measurement: the peak it divides by was measured too low (module docstring)."""


def valid_utilisation(value) -> float | None:
    """An MFU or HFU as a number to show, or None ('n/a') where it is missing or above MFU_VALID_MAX."""
    return value if isinstance(value, (int, float)) and 0 <= value <= MFU_VALID_MAX else None


def format_duration(seconds: float) -> str:
    """h:mm:ss, hours unbounded (a 3-day run reads 72:00:00)."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _row_step(line: str) -> float:
    """The step of a metrics row; infinity for a line that is not one (blank, or torn by a kill mid-write), so
    that resuming drops it instead of failing on it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return math.inf
    return row.get("step", 0) if isinstance(row, dict) else math.inf


def read_rows(path: Path, strict: bool = False) -> list[dict]:
    """The rows of metrics file `path`, in file order; blank lines are skipped.

    Lenient (the default, for a file a running trainer may be appending to): a missing or unreadable file has no
    rows, and a line that is not a JSON object (one torn mid-write) is skipped. strict: ConfigError naming the file
    (and the line) when it cannot be read, is not UTF-8, or holds a line that is not a JSON object."""
    return list(read_jsonl(path, strict, what="metrics file", row="a metrics row"))


def last_train_row(path: Path) -> dict | None:
    """The last training row (one with a `loss`) of a metrics file being written; None if there is none yet."""
    return next((row for row in reversed(read_rows(path)) if "loss" in row), None)


def final_eval_loss(path: Path, total_steps: int) -> float | None:
    """The eval loss logged at step `total_steps` of metrics file `path` (the last such row); None if the run did
    not get there."""
    loss = None
    for row in read_rows(path):
        if row.get("step") == total_steps and "eval_loss" in row:
            loss = float(row["eval_loss"])
    return loss


class MetricsLogger:
    CONSOLE_KEYS = ("loss", "eval_loss", "lr", "tokens_per_s", "mfu", "grad_norm", "loss_scale")

    def __init__(self, path: Path, enabled: bool = True, resume_step: int = 0, stream=sys.stdout,
                 logging: LoggingConfig | None = None, total_steps: int | None = None, run_config: dict | None = None):
        """resume_step: the step training restarts from (rows past it are dropped; the ETA counts from it).
        total_steps: the run's last step, for the console ETA (none shown without it).
        run_config: the run's config as plain data, filed with the W&B run."""
        self.enabled, self.stream = enabled, stream
        self.resume_step, self.total_steps = resume_step, total_steps
        self.start = time.time()
        self.file, self.sinks = None, []
        if not enabled:
            return
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise ConfigError(f"{path} is a directory: the run's metrics file cannot be written there (move it away)")
        with disk_full_as(path, f"the metrics rows up to step {resume_step}"):
            if path.exists():
                keep = [line for line in path.read_text().splitlines() if _row_step(line) <= resume_step]
                path.write_text("".join(line + "\n" for line in keep))
        self.file = path.open("a")
        self.sinks = open_sinks(logging, path.parent, resume_step, run_config)

    def eta_s(self, step: int, now: float) -> float | None:
        """Seconds left: the mean wall time per step since start/resume (evaluations included) × steps left."""
        done = step - self.resume_step
        if self.total_steps is None or done <= 0:
            return None
        return (now - self.start) / done * (self.total_steps - step)

    def log(self, row: dict, console: str | None = None) -> None:
        if not self.enabled:
            return
        now = time.time()
        row = {**row, "time": now}
        what = f"the metrics row of step {row.get('step', '?')}"
        with disk_full_as(self.path, what, then="the checkpoints written so far are complete; free space and rerun "
                                                "the same command to resume"):
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        for sink in self.sinks:
            sink.write(row)
        if console and is_main():  # the console line: the main rank's (typed_yaml/log.py)
            parts = [console] + [_fmt(k, row[k]) for k in self.CONSOLE_KEYS if k in row]
            parts.append(f"{now - self.start:.0f}s")
            eta = self.eta_s(row["step"], now) if "step" in row else None
            if eta is not None:
                parts.append(f"eta {format_duration(eta)}")
            print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.file:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError as e:  # the row a full disk refused, flushed again: log() has said so already
                if disk_full_reason(e, self.path) is None:
                    raise
        for sink in self.sinks:
            sink.close()
        self.sinks = []
