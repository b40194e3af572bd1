"""The global dedup steps that follow ingest: edges per (band, bucket), then clustering.

``run_edges`` is split over tasks (each (kind, band, bucket) is a unit); ``run_cluster`` runs
once, on task 0, and writes ``work/dedup/removals.npy`` (records ``uid, keep_uid, reason``,
sorted by uid) plus ``dropped/dedup.jsonl``: ``id``, ``reason``, ``source``, ``index``,
``snippet``, ``duplicate_of`` (the kept document it duplicates) and for near duplicates the
MinHash estimate of their Jaccard (``jaccard``; ``exact_jaccard`` too with ``verify``), as
``value`` against ``threshold`` (verify.py). Exact duplicates are resolved first; MinHash then
clusters only the documents still kept. Memory of ``run_cluster`` grows with the number of
duplicates, not with the corpus.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from data_pipeline.dedup.buckets import (EDGE_DTYPE, bucket_dir, find_edges, load_checked, load_full_signatures,
                                         save_atomic)
from data_pipeline.dedup.exact import id_rank
from data_pipeline.dedup.minhash import MinHasher, cluster_removals, lsh_midpoint
from data_pipeline.dedup.verify import assign, clusters, estimated_jaccard, exact_jaccard
from data_pipeline.ingest import UID_FILE_SHIFT
from data_pipeline.report import StageStats, drop_row, progress
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


def _lookup(layout, shards_needed: dict[str, set[int]], bar) -> dict[int, tuple[str, int, str | None]]:
    """uid -> (id, words, snippet) for the requested uids, reading each involved shard's ids file once
    (folders prepared before snippets were kept have none)."""
    found = {}
    for shard, uids in sorted(shards_needed.items()):
        for row in iter_jsonl(layout.ingest / f"{shard}.ids.jsonl"):
            if row[0] in uids:
                found[row[0]] = (row[1], row[2], row[3] if len(row) > 3 else None)
        bar.update()
    return found


def _by_shard(uids, shard_of) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for u in uids:
        out[shard_of(u)].add(u)
    return out


def _shingles(cfg, layout, by_shard: dict[str, set[int]]) -> dict[int, np.ndarray]:
    """uid -> sorted unique shingle hashes of the requested kept documents (their texts read once)."""
    hasher, out = MinHasher(cfg.dedup.minhash), {}
    for shard, uids in sorted(by_shard.items()):
        for rec in iter_jsonl(layout.ingest / f"{shard}.jsonl"):
            if rec["uid"] in uids:
                out[rec["uid"]] = hasher.shingle_hashes(rec["text"])
    return out


def near_duplicates(cfg, layout, shard_of, near: dict[int, int], rank_of) -> tuple[dict[int, int], dict[int, dict]]:
    """Re-assign union-find's ``{removed: cluster's kept}`` (verify.py): returns ``{removed: kept it
    duplicates}`` (fewer removals with ``verify``) and each removal's Jaccard evidence."""
    mh = cfg.dedup.minhash
    groups = clusters(near, rank_of)
    by_shard = _by_shard([u for g in groups for u in g], shard_of)
    sigs = {}
    for shard, uids in sorted(by_shard.items()):
        sigs.update(load_full_signatures(layout.sigs / "full", shard, uids, mh.bands * mh.rows))
    shingles = _shingles(cfg, layout, by_shard) if mh.verify else {}

    def estimate(u: int, kept: list[int]) -> np.ndarray:
        if u not in sigs or any(k not in sigs for k in kept):
            return np.full(len(kept), np.nan)
        return estimated_jaccard(sigs[u], np.stack([sigs[k] for k in kept]))

    def exact(u: int, kept: list[int]) -> np.ndarray:
        return exact_jaccard(shingles[u], [shingles[k] for k in kept])

    removals, evidence = {}, {}
    similarity, threshold = (exact, mh.jaccard_threshold) if mh.verify else (estimate, None)
    for group in groups:
        for uid, (kept, sim) in assign(group, similarity, threshold).items():
            removals[uid] = kept
            est = float(estimate(uid, [kept])[0])
            ev = {"jaccard": None if np.isnan(est) else round(est, 4)}
            if mh.verify:
                ev["exact_jaccard"] = round(sim, 4)
            # The rule's value against its bar: without verify, the estimate against the LSH midpoint,
            # which a drop may be far below (a chance band match, or a chain through the cluster).
            ev.update(value=ev["exact_jaccard" if mh.verify else "jaccard"], drop_if=">=",
                      threshold=mh.jaccard_threshold if mh.verify else round(lsh_midpoint(mh), 4))
            evidence[uid] = ev
    return removals, evidence


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
    needed = _by_shard([u for pair in list(exact.items()) + list(near.items()) for u in pair], shard_of)
    bar = progress("lookup", len(needed), cfg.progress, unit="shard")  # the ids of what was removed, and kept
    try:
        info = _lookup(layout, needed, bar)
    finally:
        bar.close()
    evidence = {u: {"value": 1.0, "drop_if": ">=", "threshold": 1.0} for u in exact}  # identical normalised text
    if near:
        near, near_evidence = near_duplicates(cfg, layout, shard_of, near, lambda u: id_rank(info[u][0]))
        evidence.update(near_evidence)
    removed = [(u, k, 0) for u, k in exact.items()] + [(u, k, 1) for u, k in near.items()]
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
                out.write(drop_row(info[u][0], REASONS[code], cfg.inputs[u >> UID_FILE_SHIFT],
                                   u & ((1 << UID_FILE_SHIFT) - 1), info[u][2], duplicate_of=info[k][0],
                                   **evidence[u]))
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
