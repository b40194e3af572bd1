"""The global dedup steps that follow ingest: edges per (band, bucket), then clustering.

``run_edges`` is split over tasks (each (kind, band, bucket) is a unit); ``run_cluster`` runs
once, on task 0, and writes ``work/dedup/removals.npy`` (records ``uid, keep_uid, reason``,
sorted by uid) plus ``dropped/dedup.jsonl`` with ``id``, ``reason`` and ``duplicate_of``.
Exact duplicates are resolved first; MinHash then clusters only the documents still kept.
Memory of ``run_cluster`` grows with the number of duplicates, not with the corpus.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from data_pipeline.dedup.buckets import EDGE_DTYPE, bucket_dir, find_edges, load_checked, save_atomic
from data_pipeline.dedup.minhash import cluster_removals
from data_pipeline.report import StageStats, progress
from data_pipeline.shards import AtomicJsonl, is_done, iter_jsonl, mark_done, my_units

REMOVAL_DTYPE = np.dtype([("uid", "<u8"), ("keep_uid", "<u8"), ("reason", "<u1")])
REASONS = ("exact_dedup.duplicate", "minhash_dedup.near_duplicate")


def edge_units(cfg) -> list[tuple[str, int, int]]:
    units = []
    if cfg.dedup.exact.enabled:
        units += [("exact", 0, k) for k in range(cfg.dedup.exact.num_buckets)]
    if cfg.dedup.minhash.enabled:
        mh = cfg.dedup.minhash
        units += [("minhash", b, k) for b in range(mh.bands) for k in range(mh.num_buckets)]
    return units


def _edge_path(layout, kind: str, band: int, bucket: int) -> Path:
    return layout.work / "edges" / kind / f"b{band:03d}_k{bucket:03d}.npy"


def run_edges(cfg, layout, task: tuple[int, int], shards: list[str]) -> None:
    """Find duplicate edges in this task's (kind, band, bucket) units."""
    todo = [u for u in my_units(edge_units(cfg), *task) if not is_done(_edge_path(layout, *u).with_suffix(".done"))]
    bar = progress("dedup", len(todo), cfg.progress, unit="bucket")
    try:
        for kind, band, bucket in todo:
            out = _edge_path(layout, kind, band, bucket)
            folder = bucket_dir(layout.sigs / kind, band, bucket)
            files = [folder / f"{s}.npy" for s in shards]
            missing = [f for f in files if not f.exists()]
            if missing:
                raise FileNotFoundError(f"signature file {missing[0]} is missing: its ingest shard did not finish")
            edges = find_edges(files)
            save_atomic(out, edges)
            mark_done(out.with_suffix(".done"), {"edges": int(edges.size)})
            bar.update()
    finally:
        bar.close()


def _lookup(layout, shards_needed: dict[str, set[int]], bar) -> dict[int, tuple[str, int]]:
    """uid -> (id, words) for the requested uids, reading each involved shard's ids file once."""
    found = {}
    for shard, uids in sorted(shards_needed.items()):
        for uid, doc_id, words in iter_jsonl(layout.ingest / f"{shard}.ids.jsonl"):
            if uid in uids:
                found[uid] = (doc_id, words)
        bar.update()
    return found


def run_cluster(cfg, layout, shard_of, kept_before: tuple[int, int]) -> dict:
    """Union-find over all edges; returns the stage stats and writes removals and dropped/dedup."""
    edges: dict[str, list[np.ndarray]] = defaultdict(list)
    units = edge_units(cfg)
    bar = progress("cluster", len(units), cfg.progress, unit="bucket")
    try:
        for k, b, u in units:
            edges[k].append(load_checked(_edge_path(layout, k, b, u), EDGE_DTYPE))
            bar.update()
    finally:
        bar.close()
    exact = cluster_removals(edges["exact"]) if cfg.dedup.exact.enabled else {}
    near = cluster_removals(edges["minhash"], exclude=set(exact)) if cfg.dedup.minhash.enabled else {}
    removed = [(u, k, 0) for u, k in exact.items()] + [(u, k, 1) for u, k in near.items()]
    needed: dict[str, set[int]] = defaultdict(set)
    for u, k, _ in removed:
        needed[shard_of(u)].add(u)
        needed[shard_of(k)].add(k)
    bar = progress("lookup", len(needed), cfg.progress, unit="shard")  # the ids of what was removed, and kept
    try:
        info = _lookup(layout, needed, bar)
    finally:
        bar.close()
    rec = np.array(sorted(removed), REMOVAL_DTYPE) if removed else np.empty(0, REMOVAL_DTYPE)
    save_atomic(layout.work / "dedup" / "removals.npy", rec)
    out = AtomicJsonl(layout.dropped / "dedup.jsonl")
    docs, words = kept_before
    stats = {}
    for code, stage in enumerate(("exact_dedup", "minhash_dedup")):
        s = StageStats(docs_in=docs, words_in=words)
        for u, k, c in rec.tolist():
            if c == code:
                s.dropped[REASONS[code]] += 1
                words -= info[u][1]
                out.write({"id": info[u][0], "reason": REASONS[code], "duplicate_of": info[k][0]})
        docs -= sum(s.dropped.values())
        s.docs_out, s.words_out = docs, words
        if (cfg.dedup.exact.enabled, cfg.dedup.minhash.enabled)[code]:
            stats[stage] = s.to_dict()
    out.close()
    return stats


def load_removals(layout) -> dict[int, int]:
    """uid -> reason code of every document removed by exact or MinHash dedup."""
    path = layout.work / "dedup" / "removals.npy"
    if not path.exists():
        return {}
    rec = load_checked(path, REMOVAL_DTYPE)
    return dict(zip(rec["uid"].tolist(), rec["reason"].tolist()))
