"""Stage orchestration: ingest -> dedup edges -> cluster (+ substring, tokenizer) -> tokenize -> merge.

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

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from data_pipeline import canaries
from data_pipeline.config import PrepareConfig, to_dict
from data_pipeline.hf_tokenizer import copy_tokenizer, load_tokenizer, tokenizer_file
from data_pipeline.dedup.cluster import load_removals, run_cluster, run_edges, edge_units, _edge_path
from data_pipeline.dedup.substring import remove_repeats
from data_pipeline.errors import DataError
from data_pipeline.indexed import IndexedDataset, IndexedDatasetBuilder, dtype_for_vocab
from data_pipeline.ingest import UID_FILE_SHIFT, run_ingest, shard_of_uid
from data_pipeline.report import STAGES, StageStats, drop_row, merge_stage_dicts, ordered, progress, summary
from data_pipeline.shards import (AtomicJsonl, is_done, iter_jsonl, mark_done, my_units, read_done,
                                  remove_stale_temps, task_from_env, write_json_atomic)
from data_pipeline.encode import TokenizerPool, train_from_texts
from typed_yaml import ConfigError, runlock
from typed_yaml.disk import disk_full_as

PIPELINE_STAGES = ("ingest", "dedup", "cluster", "tokenize", "merge")


@dataclass
class PreparedDir:
    """The paths inside a prepared output folder (the layout above); not llm.cost.layout.Layout, a parallel layout."""

    root: Path

    @property
    def work(self) -> Path: return self.root / "work"
    @property
    def ingest(self) -> Path: return self.work / "ingest"
    @property
    def sigs(self) -> Path: return self.work / "sigs"
    @property
    def dropped(self) -> Path: return self.root / "dropped"
    @property
    def tokens(self) -> Path: return self.root / "tokens"


def _check_manifest(cfg: PrepareConfig, layout: PreparedDir) -> None:
    """Refuse to resume into a folder prepared with different settings (shards would not match)."""
    body = {k: v for k, v in to_dict(cfg).items() if k not in ("progress", "shards")}
    if not cfg.canaries.enabled:  # folders prepared before canaries existed keep their digest
        del body["canaries"]
    mh = body["dedup"]["minhash"]
    if not mh["verify"]:  # and so do those prepared before the re-check existed
        del mh["verify"], mh["jaccard_threshold"]
    body["docs_per_shard"] = cfg.shards.docs_per_shard
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    path = layout.work / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old["config_sha256"] != digest:
            key = _first_difference(old["config"], json.loads(json.dumps(body)))
            raise DataError(f"{layout.root} was prepared with a different config ({key} differs); "
                            "use a new --output folder, delete this one, or restore the setting")
    else:
        write_json_atomic(path, {"config_sha256": digest, "config": body})


def _first_difference(old: object, new: object, key: str = "") -> str:
    """The dotted key of the first setting that differs between two config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return _first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
    return key or "the config"


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


def final_texts(cfg: PrepareConfig, layout: PreparedDir, shard: str, removals: dict, edits: dict):
    """The kept documents of one shard after dedup and substring edits, in order."""
    for rec in iter_jsonl(layout.ingest / f"{shard}.jsonl"):
        uid = rec["uid"]
        if uid in removals:
            continue
        text = edits.get(str(uid), rec["text"]) if edits else rec["text"]
        if text is not None:
            yield text


def _edits(layout: PreparedDir) -> dict:
    path = layout.work / "substring" / "edits.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_substring(cfg: PrepareConfig, layout: PreparedDir, shards: list[str], removals: dict) -> dict:
    """Exact-substring removal over the whole kept corpus (in memory; see dedup/substring.py)."""
    uids, ids, texts = [], [], []
    for shard in shards:
        for rec in iter_jsonl(layout.ingest / f"{shard}.jsonl"):
            if rec["uid"] not in removals:
                uids.append(rec["uid"]), ids.append(rec["id"]), texts.append(rec["text"])
    new = remove_repeats(texts, cfg.dedup.substring)
    s, edits = StageStats(), {}
    out = AtomicJsonl(layout.dropped / "substring.jsonl")
    for uid, doc_id, old, text in zip(uids, ids, texts, new):
        reason = None if text is not None else "substring_dedup.emptied"
        s.record(len(old.split()), len(text.split()) if text else 0, reason)
        if text is not old:
            edits[str(uid)] = text
        if reason:
            out.write(drop_row(doc_id, reason, cfg.inputs[uid >> UID_FILE_SHIFT], uid & ((1 << UID_FILE_SHIFT) - 1),
                               old, min_words_left=cfg.dedup.substring.min_words_left))
    out.close()
    write_json_atomic(layout.work / "substring" / "edits.json", edits)
    return s.to_dict()


def _check_kept(ingest: dict[str, StageStats], cluster: dict[str, dict]) -> None:
    """An empty result is a setting to change, not a dataset to write: say what dropped it all."""
    stages = {k: v for k, v in ingest.items() if v.docs_in}
    stages.update({k: StageStats.from_dict(v) for k, v in cluster.items()})
    last = [s for s in STAGES if s in stages][-1]
    if stages[last].docs_out:
        return
    drops = Counter()
    for s in stages.values():
        drops.update(s.dropped)
    top = ", ".join(f"{k}={v}" for k, v in drops.most_common(4))
    raise DataError(f"no document survived: of {stages['read'].docs_in} read, dropped {top}; check "
                    "reader.text_field and loosen the settings that dropped them (see configs/data/default.yaml)")


def stage_cluster(cfg: PrepareConfig, layout: PreparedDir, shards: list[str]) -> None:
    """Task 0 only: dedup clustering, substring removal, tokenizer (trained or copied)."""
    marker = layout.work / "cluster.done"
    if is_done(marker):
        return
    ingest = merge_stage_dicts([read_done(layout.ingest / f"{s}.done")["stages"] for s in shards])
    last = ingest["decontaminate"] if ingest["decontaminate"].docs_in else ingest["filter"]
    stats = run_cluster(cfg, layout, lambda u: shard_of_uid(u, cfg.shards.docs_per_shard),
                        (last.docs_out, last.words_out))
    removals = load_removals(layout)
    if cfg.dedup.substring.enabled:
        stats["substring_dedup"] = _run_substring(cfg, layout, shards, removals)
    _check_kept(ingest, stats)
    if cfg.tokenize.tokenizer:
        copy_tokenizer(cfg.tokenize.tokenizer, layout.root)
    else:
        edits = _edits(layout)
        texts = (t for s in shards for t in final_texts(cfg, layout, s, removals, edits))
        train_from_texts(texts, layout.root, cfg.tokenize)
    mark_done(marker, {"stages": stats})


def kept_documents(cfg: PrepareConfig, layout: PreparedDir, shards: list[str], removals: dict, edits: dict) -> int:
    """How many documents of ``shards`` reach the tokenizer (what ``final_texts`` will yield), from the counts
    already on disk: ingest's kept documents, less dedup removals and documents substring removal emptied."""
    names, size, kept = set(shards), cfg.shards.docs_per_shard, 0
    for shard in shards:
        stages = read_done(layout.ingest / f"{shard}.done")["stages"]
        kept += stages["decontaminate" if stages["decontaminate"]["docs_in"] else "filter"]["docs_out"]
    kept -= sum(1 for uid in removals if shard_of_uid(uid, size) in names)
    return kept - sum(1 for uid, text in edits.items() if text is None and shard_of_uid(int(uid), size) in names)


def stage_tokenize(cfg: PrepareConfig, layout: PreparedDir, shards: list[str], task) -> None:
    removals, edits = load_removals(layout), _edits(layout)
    todo = [s for s in my_units(shards, *task) if not is_done(layout.tokens / f"{s}.done")]
    if not todo:
        return
    bar = progress("tokenize", kept_documents(cfg, layout, todo, removals, edits), cfg.progress)
    try:
        with TokenizerPool(tokenizer_file(layout.root), cfg.tokenize) as pool:
            for shard in todo:
                docs, tokens = pool.write_shard(final_texts(cfg, layout, shard, removals, edits),
                                                layout.tokens / shard, bar.update)
                mark_done(layout.tokens / f"{shard}.done", {"docs": docs, "tokens": tokens})
    finally:
        bar.close()


def stage_merge(cfg: PrepareConfig, layout: PreparedDir, shards: list[str]) -> dict:
    """Concatenate token shards into DIR/data.bin/.idx (in shard order), with the canaries' copies
    among them when enabled (DIR/canaries.json lists them), and write report.json."""
    tok = load_tokenizer(tokenizer_file(layout.root))
    prefix = layout.root / "data"
    corpus_docs = sum(read_done(layout.tokens / f"{s}.done")["docs"] for s in shards)
    plan = canaries.build_plan(cfg.canaries, tok, corpus_docs) if cfg.canaries.enabled else None
    bar = progress("merge", corpus_docs + (plan["inserted_documents"] if plan else 0), cfg.progress)
    docs = tokens = 0
    corpus = (ds[i] for ds in (IndexedDataset(layout.tokens / s) for s in shards) for i in range(len(ds)))
    with IndexedDatasetBuilder(prefix, dtype_for_vocab(tok.vocab_size)) as builder:
        for ids in canaries.interleave(corpus, plan, tok.eos_id):
            builder.add_document(ids)
            docs += 1
            tokens += len(ids)
            bar.update()
    bar.close()
    if plan is not None:
        write_json_atomic(layout.root / canaries.SIDECAR, plan)
    stages = merge_stage_dicts([read_done(layout.ingest / f"{s}.done")["stages"] for s in shards])
    stages = {k: v for k, v in stages.items() if v.docs_in or k == "read"}
    stages.update({k: StageStats.from_dict(v) for k, v in read_done(layout.work / "cluster.done")["stages"].items()})
    last = stages[[s for s in STAGES if s in stages][-1]]
    planted = (plan["inserted_documents"], plan["inserted_tokens"]) if plan else (0, 0)
    stages["tokenize"] = StageStats(docs_in=last.docs_out, docs_out=docs - planted[0], words_in=last.words_out,
                                    words_out=last.words_out, tokens_out=tokens - planted[1])
    report = {"inputs": list(cfg.inputs), "stages": ordered(stages), "documents": docs, "tokens": tokens,
              "tokenizer": {"vocab_size": tok.vocab_size, "eod_id": tok.eos_id, "sha256": tok.fingerprint()},
              "shards": len(shards), "output_prefix": "data"}
    if plan is not None:
        report["canaries"] = canaries.summary(plan)
    write_json_atomic(layout.root / "report.json", report, sort_keys=False)  # keep stage order
    return report


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
    _check_manifest(cfg, layout)
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
