"""Exact deduplication by a hash of the normalised content (:func:`dedup_key`: lower-cased,
whitespace-collapsed), done with the same bucketed on-disk machinery as MinHash (one "band"
whose hash is the content hash), so it too works across shards, processes and nodes.

Order independence: of identical documents the one with the smallest ``(rank, uid)`` is kept,
``rank`` being a hash of the document id, so shuffling the input keeps the same ids.
"""

from __future__ import annotations

import xxhash

from data_pipeline.normalize import dedup_key


def content_hash(text: str) -> int:
    """64-bit xxh3 of the normalised content (collisions: ~n^2 / 2^65, negligible below 1e9 docs)."""
    return xxhash.xxh3_64_intdigest(dedup_key(text).encode("utf-8"))


def id_rank(doc_id: str) -> int:
    """The order-independent tie-break between duplicates: a hash of the id (not its position)."""
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8"))
