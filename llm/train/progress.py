"""Progress lines for long phases: done/total, rate, ETA and the phase's own numbers, on the console and in a log.

Every long phase (the first steps of pretraining, each alignment stage, PPO/GRPO/RLOO iterations, evaluation, the
memorization audit) reports through one `Progress`, so a run that is slow is never mistaken for a hung one:

    sft: step 40/200 (20%) | loss 0.8123 | 2.31 s/step | elapsed 0:01:32 | ETA 0:06:10

A line is written after the first unit (its time alone: it holds compilation and warm-up), at the last, and in
between whenever `every_s` seconds have passed since the previous line (every unit with every_s=0). The same
line goes to `log` (the console; by default typed_yaml/log.py's `info`, which prints on the main rank only) and is
appended to `log_file`, so `tail -f` on a cluster shows it too. Only the rank that writes the run's files reports:
pass enabled=False elsewhere. It follows tqdm's `update(n)`/`close()`, so it also serves where a progress-bar factory
is expected (llm/audit/run.py).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from llm.train.metrics import format_duration
from typed_yaml.log import info

DEFAULT_EVERY_S = 30.0
"""Seconds between two progress lines; LLM_PROGRESS_EVERY_S overrides it (0: a line per unit)."""


def every_s_default() -> float:
    """LLM_PROGRESS_EVERY_S, or DEFAULT_EVERY_S; ConfigError when it is not a number of seconds >= 0."""
    text = os.environ.get("LLM_PROGRESS_EVERY_S")
    if text is None:
        return DEFAULT_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from llm.config import ConfigError
        raise ConfigError(f"LLM_PROGRESS_EVERY_S={text!r} is not a number of seconds >= 0")
    return value


def format_number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Reports a phase of `total` units (`unit`: 'step', 'iteration', 'seq', ...) named `name`.

    done: units already done before this run (a resumed stage); the rate and the ETA count only this run's.
    log: where console lines go (typed_yaml/log.py's info: the main rank's; a stderr printer where stdout carries
    results); None: only the file.
    log_file: a text file every line is appended to (its folder is created); None: console only.
    every_s: seconds between lines (None: LLM_PROGRESS_EVERY_S or 30); clock: seconds, monotonic (tests pass one).
    """

    def __init__(self, name: str, total: int | None, unit: str = "step", done: int = 0,
                 log: Callable[[str], None] | None = info, log_file: str | Path | None = None,
                 every_s: float | None = None, enabled: bool = True, clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.unit = name, total, unit
        self.done = self.start = done
        self.log, self.enabled, self.clock = log, enabled, clock
        self.every_s = every_s_default() if every_s is None else every_s
        self.log_file = Path(log_file) if log_file is not None else None
        self.t0 = self.last_line = clock()
        self.first_s: float | None = None
        self.lines: list[str] = []
        if enabled and self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)

    def update(self, n: int = 1, note: str = "", **numbers) -> str | None:
        """`n` more units done; `numbers` (name → value) are shown after the count, `note` at the end of the line.
        Returns the line written, or None when it is not time for one."""
        self.done += n
        now = self.clock()
        first = self.first_s is None
        if first:
            self.first_s = now - self.t0
        last = self.total is not None and self.done >= self.total
        if not self.enabled or not (first or last or now - self.last_line >= self.every_s):
            return None
        self.last_line = now
        return self.write(self.line(now, numbers, note))

    def line(self, now: float, numbers: dict, note: str = "") -> str:
        total = f"/{self.total} ({self.done / self.total:.0%})" if self.total else ""
        cells = [f"{self.name}: {self.unit} {self.done}{total}"]
        cells += [f"{k} {format_number(v)}" for k, v in numbers.items() if v is not None]
        ran, elapsed = self.done - self.start, now - self.t0
        if ran > 0 and elapsed > 0:
            per = elapsed / ran
            cells.append(f"{per:.3g} s/{self.unit}" if per >= 1 else f"{1 / per:.3g} {self.unit}/s")
        cells.append(f"elapsed {format_duration(elapsed)}")
        if self.total is not None and ran > 0:
            cells.append(f"ETA {format_duration(elapsed / ran * max(0, self.total - self.done))}")
        if note:
            cells.append(note)
        return " | ".join(cells)

    def write(self, line: str) -> str:
        """Send `line` to the console and the log file (on the reporting rank); also used for one-off notes."""
        if not self.enabled:
            return line
        self.lines.append(line)
        if self.log is not None:
            self.log(line)
        if self.log_file is not None:
            with self.log_file.open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        return line

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """tqdm's, for code written against a bar; the text is not shown."""

    def close(self) -> None:
        """Nothing to release (the file is opened per line); here so that a Progress can stand in for a bar."""


class WithBar:
    """A tqdm bar and a Progress fed together (`update(n)`, `close()`)."""

    def __init__(self, bar, progress: Progress):
        self.bar, self.progress = bar, progress

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.progress.update(n)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.bar.set_postfix_str(s, refresh)

    def close(self) -> None:
        self.bar.close()
        self.progress.close()


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def bar_progress(name: str, total: int | None, unit: str = "seq", log_file: str | Path | None = None,
                 every_s: float | None = None, enabled: bool = True) -> WithBar:
    """For the phases that keep a tqdm bar (evaluation, the audit): the bar on a terminal (stderr a tty), and the
    same progress as lines in `log_file` and, when stderr is not a terminal (a batch job, a pipe), on stderr
    (stdout may carry the results). enabled=False: neither (another rank reports)."""
    from tqdm import tqdm
    on_terminal = sys.stderr.isatty()
    bar = tqdm(desc=name, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=not (enabled and on_terminal))
    return WithBar(bar, Progress(name, total, unit, log=None if on_terminal else stderr_line, log_file=log_file,
                                 every_s=every_s, enabled=enabled))
