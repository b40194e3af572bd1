"""Sharding, resumability and multi-node splitting.

A *unit* is one piece of work of a stage (an ingest shard, a (band, bucket) of dedup, a token
shard). Every unit writes its outputs under temporary names, renames them into place, and last
writes a ``.done`` marker holding its stats (JSON). A re-run skips units whose marker exists, so
a job killed at any point resumes where it stopped; because every unit is deterministic and the
merge orders units by name, the resumed output is byte-identical to an uninterrupted run.

Multi-node: the units of a stage are split round-robin over tasks. The task is taken from, in
order, the config (``shards.task_index/task_count``), ``SLURM_ARRAY_TASK_ID`` with
``SLURM_ARRAY_TASK_COUNT`` (SLURM job arrays), or ``RANK`` with ``WORLD_SIZE`` (torchrun-style
launchers). Stages that need all units (clustering, tokenizer training, merge) run on task 0
after every task finished the previous stage (``launch/prepare_data.py --stage``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TypeVar

from data_pipeline.errors import DataError
from typed_yaml.files import atomic_write_text, read_jsonl

T = TypeVar("T")

# Test hook: crash (as a kill would) after this many units have completed in this process.
CRASH_ENV = "DATA_PIPELINE_CRASH_AFTER_UNITS"


@dataclass
class ShardConfig:
    """How work is cut and spread."""

    docs_per_shard: int = 10_000
    """Raw documents per ingest shard (the unit of resumption and of parallel work)."""
    task_index: int | None = None
    """This task's index; None reads SLURM_ARRAY_TASK_ID or RANK (default 0)."""
    task_count: int | None = None
    """Number of tasks; None reads SLURM_ARRAY_TASK_COUNT or WORLD_SIZE (default 1)."""


def task_from_env(cfg: ShardConfig, env: dict | None = None) -> tuple[int, int]:
    """(index, count) of this task; raises DataError when the index is outside [0, count)."""
    env = os.environ if env is None else env
    if cfg.task_index is not None or cfg.task_count is not None:
        index, count = cfg.task_index or 0, cfg.task_count or 1
    elif "SLURM_ARRAY_TASK_ID" in env:
        # SLURM arrays may start at an offset (--array=1-8); SLURM_ARRAY_TASK_MIN makes it 0-based.
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(env.get("SLURM_ARRAY_TASK_COUNT", 1))
    elif "RANK" in env:
        index, count = int(env["RANK"]), int(env.get("WORLD_SIZE", 1))
    else:
        index, count = 0, 1
    if not 0 <= index < count:
        raise DataError(f"task index {index} is outside [0, {count}) (check SLURM_ARRAY_* / RANK / WORLD_SIZE)")
    return index, count


def my_units(units: Iterable[T], index: int, count: int) -> list[T]:
    """Round-robin share of ``units`` for task ``index`` of ``count``."""
    return [u for k, u in enumerate(units) if k % count == index]


def shard_name(file_index: int, chunk: int) -> str:
    """Ingest shard names sort in input order: file first, then chunk within the file."""
    return f"shard_{file_index:05d}_{chunk:05d}"


def is_done(marker: Path) -> bool:
    return marker.exists()


def read_done(marker: Path) -> dict:
    return json.loads(marker.read_text())


def mark_done(marker: Path, stats: dict) -> None:
    """Write the unit's stats as its completion marker (atomically), then honour the crash hook."""
    write_json_atomic(marker, stats)
    _crash_hook()


_completed = 0


def _crash_hook() -> None:
    global _completed
    _completed += 1
    limit = os.environ.get(CRASH_ENV)
    if limit is not None and _completed >= int(limit):
        # os._exit, not an exception: no cleanup runs, like SIGKILL or a node failure.
        os._exit(137)


TEMP_NAME = re.compile(r"\.tmp\d*$")
"""The temporary names writers use before their atomic rename: `NAME.tmp<pid>` (these helpers, dedup buckets)
and `NAME.tmp` (the .bin/.idx builder)."""


def remove_stale_temps(root: Path) -> int:
    """Delete every temporary file (TEMP_NAME) under root: called by the one task that holds root's lock, before
    it writes, so each is a killed writer's leftover (kill -9 runs no cleanup). Returns how many were removed."""
    removed = 0
    for p in Path(root).rglob("*.tmp*"):
        if TEMP_NAME.search(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def write_json_atomic(path: Path, obj: object, sort_keys: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=sort_keys) + "\n")  # a full disk leaves no part


class AtomicJsonl:
    """A jsonl file written to ``path.tmp`` and renamed on :meth:`close`; ``abort`` discards."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        self.f = open(self.tmp, "w", encoding="utf-8")
        self.count = 0

    def write(self, obj: dict) -> None:
        try:
            self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        except OSError as e:  # a file object's write error names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        self.count += 1

    def close(self) -> None:
        try:
            self.f.close()
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        os.replace(self.tmp, self.path)


def iter_jsonl(path: Path) -> Iterable:
    """The values of one of our own JSONL files (documents, or ids rows); ConfigError naming file:line if corrupt."""
    return read_jsonl(path, kind=object, what="shard")
