"""Stage orchestration: ingest -> dedup edges -> cluster (+ substring, tokenizer) -> tokenize -> merge.

The stages themselves: data_pipeline/ingest.py, dedup/cluster.py (edges), final_stages.py (cluster, tokenize,
merge); the folder's paths and manifest: prepared_dir.py.

Layout of the output folder ``DIR`` (``PreparedDir`` names its parts)::

    DIR/tokenizer.model            trained on a sample of kept documents unless one was given
    DIR/data.bin, DIR/data.idx     the merged Megatron dataset (pretraining: data.paths=[DIR/data])
    DIR/tokens/shard_*.bin/.idx    per-shard token files (the unit of parallel tokenization)
    DIR/report.json                docs/words in and out per stage, drops per reason, tokens
    DIR/canaries.json              planted canaries and their documents (canaries.enabled; canaries.py)
    DIR/dropped/*.jsonl            one record per dropped document: id, reason, source file and index,
                                   snippet, and the rule's value against its threshold (report.drop_row;
                                   read them with `prepare_data.py inspect DIR`)
    DIR/work/                      intermediate shards, signatures, edges, markers (resumable)

Every stage unit is resumable (see ``shards.py``). With several tasks (SLURM array / ranks),
each runs the same command; the single-process steps (cluster, merge) run on task 0 while the
others wait for their markers, and the per-unit stages are split round-robin.
"""

from __future__ import annotations

import time
from pathlib import Path

from data_pipeline.config import PrepareConfig
from data_pipeline.dedup.cluster import _edge_path, edge_units, run_edges
from data_pipeline.errors import DataError
from data_pipeline.final_stages import stage_cluster, stage_merge, stage_tokenize
from data_pipeline.ingest import run_ingest
from data_pipeline.prepared_dir import PreparedDir, check_manifest
from data_pipeline.report import summary
from data_pipeline.shards import read_done, remove_stale_temps, task_from_env
from typed_yaml import ConfigError, runlock
from typed_yaml.disk import disk_full_as

PIPELINE_STAGES = ("ingest", "dedup", "cluster", "tokenize", "merge")


def _wait(paths: list[Path], what: str, timeout_s: float, task: tuple[int, int], poll_s: float = 2.0) -> None:
    """Filesystem barrier between tasks: block until every marker in ``paths`` exists. A lone
    task has no one to wait for: a missing marker means an earlier stage was never run."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [p for p in paths if not p.exists()]
        if not missing:
            return
        if task[1] == 1:
            raise DataError(f"waiting for {what}, but this is the only task and {missing[0]} is missing; "
                            "run the earlier --stage first, or --stage all")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for {what}; still missing {missing[0]}")
        time.sleep(poll_s)


def _all_shards(cfg: PrepareConfig, layout: PreparedDir) -> list[str]:
    names = []
    for i in range(len(cfg.inputs)):
        names += read_done(layout.ingest / f"file_{i:05d}.done")["shards"]
    return names


def run(cfg: PrepareConfig, stage: str = "all", wait_timeout_s: float = 7 * 24 * 3600.0) -> dict | None:
    """Run ``stage`` (or all stages) as this task; returns the report on the task that merges."""
    if stage not in ("all",) + PIPELINE_STAGES:
        raise ValueError(f"stage must be 'all' or one of {PIPELINE_STAGES}, got {stage!r}")
    layout = PreparedDir(Path(cfg.output))
    layout.work.mkdir(parents=True, exist_ok=True)
    task = task_from_env(cfg.shards)
    # One writer per task of a folder (typed_yaml/runlock.py): the tasks of an array share it, a second copy of
    # one is refused naming the first; released at the end, and by the kernel if the task is killed.
    try:
        lock = runlock.acquire(layout.work / f".lock-task{task[0]}", f"--output {layout.root} (task {task[0]})")
    except ConfigError as e:
        raise DataError(str(e)) from None
    try:
        return _run_stages(cfg, layout, task, stage, wait_timeout_s)
    finally:
        lock.release()


def _run_stages(cfg: PrepareConfig, layout: PreparedDir, task: tuple[int, int], stage: str, wait_timeout_s: float):
    """The stages, after the temporary files a killed run left are removed; a full disk is one DataError naming
    the file (the unit it was writing has no marker, so a rerun redoes that unit only)."""
    alone = task[1] == 1  # we hold the folder's lock, so every temporary file in it is a dead writer's
    if alone:
        remove_stale_temps(layout.root)
    what = "the prepared data" if stage == "all" else f"the {stage} stage's files"
    try:
        with disk_full_as(layout.root, what, error=DataError, then="the units finished before are kept (marked "
                          "done); free space and rerun the same command to go on from them"):
            return _stages(cfg, layout, task, stage, wait_timeout_s)
    finally:
        if alone:  # what a failed unit half wrote, to give a full disk its space back
            remove_stale_temps(layout.root)


def _stages(cfg: PrepareConfig, layout: PreparedDir, task: tuple[int, int], stage: str, wait_timeout_s: float):
    check_manifest(cfg, layout)
    wanted = PIPELINE_STAGES if stage == "all" else (stage,)
    file_markers = [layout.ingest / f"file_{i:05d}.done" for i in range(len(cfg.inputs))]
    if "ingest" in wanted:
        run_ingest(cfg, layout, task)
    if wanted[-1] == "ingest":
        return None
    _wait(file_markers, "every task's ingest stage", wait_timeout_s, task)
    shards = _all_shards(cfg, layout)
    if "dedup" in wanted:
        run_edges(cfg, layout, task, shards)
    if wanted[-1] == "dedup":
        return None
    edge_markers = [_edge_path(layout, *u).with_suffix(".done") for u in edge_units(cfg)]
    _wait(edge_markers, "every task's dedup stage", wait_timeout_s, task)
    if "cluster" in wanted and task[0] == 0:
        stage_cluster(cfg, layout, shards)
    if wanted[-1] == "cluster":
        return None
    _wait([layout.work / "cluster.done"], "the cluster step on task 0", wait_timeout_s, task)
    if "tokenize" in wanted:
        stage_tokenize(cfg, layout, shards, task)
    if "merge" not in wanted or task[0] != 0:
        return None
    _wait([layout.tokens / f"{s}.done" for s in shards], "every task's tokenize stage", wait_timeout_s, task)
    return stage_merge(cfg, layout, shards)


__all__ = ["run", "summary", "PreparedDir", "PIPELINE_STAGES"]
