"""Near-duplicate detection with MinHash LSH (Broder 1997; as in FineWeb, Penedo et al. 2024,
arXiv:2406.17557, Sec. 3.3: word 5-grams, 112 hashes as 14 bands x 8 rows).

A pair of documents with Jaccard similarity s over their shingle sets becomes a candidate with
probability 1 - (1 - s**rows)**bands: with 14 x 8 that is 0.9996 at s=0.9, 0.92 at s=0.8, 0.45 at
s=0.7 and 1e-4 at s=0.3 (the S-curve's midpoint is near (1/bands)**(1/rows) = 0.72).
By default candidates are not re-verified against their true Jaccard, as in FineWeb and
datasketch's MinHashLSH; clusters come from union-find over candidate edges and keep one
document each. ``verify`` re-checks them (``verify.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from data_pipeline.normalize import dedup_key

_SHIFT = np.uint64(32)


@dataclass
class MinHashConfig:
    """Near-dedup settings; defaults follow FineWeb."""

    enabled: bool = True
    """Drop near-duplicates (all but one document of each cluster of candidates)."""
    ngram: int = 5
    """Words per shingle (FineWeb: 5)."""
    bands: int = 14
    """Two documents are candidates when all `rows` hashes of any one band agree; with `rows` this sets the
    Jaccard similarity at which half of all pairs are caught, about (1/bands)^(1/rows) = 0.72 by default."""
    rows: int = 8
    """bands x rows = hashes per document (FineWeb: 14 x 8 = 112)."""
    seed: int = 1
    """Seeds the hash functions. Signatures of different seeds are not comparable: keep it across the tasks and
    re-runs of one output folder."""
    verify: bool = False
    """Re-check candidates by the exact Jaccard of their shingle sets: a document is dropped only
    when a kept document of its cluster has Jaccard >= ``jaccard_threshold`` with it, otherwise it
    is kept. Off by default, as in FineWeb (which does not verify); costs reading the candidates'
    texts once in the cluster step (dedup/verify.py)."""
    jaccard_threshold: float = 0.75
    """The exact-Jaccard bar of ``verify``, in (0, 1]. FineWeb (arXiv:2406.17557, Sec. 3.3) sets
    14 x 8 hashes "targeting documents that are at least 75% similar"."""
    num_buckets: int = 1
    """Split each band's signatures into this many files by hash, bounding a dedup task's memory
    to about 24 B x documents / num_buckets."""


def lsh_midpoint(cfg: MinHashConfig) -> float:
    """(1/bands)**(1/rows): the Jaccard at which the S-curve is steepest, about where a pair
    becomes likely to be a candidate (0.72 for 14 x 8)."""
    return (1.0 / cfg.bands) ** (1.0 / cfg.rows)


class MinHasher:
    """Computes a document's MinHash signature and LSH band hashes.

    Shingles are word ``ngram``-grams of :func:`dedup_key` (lower-cased, whitespace-collapsed);
    a document shorter than ``ngram`` words is one shingle. Each shingle is hashed to 32 bits
    ``x`` with xxh3, then permuted by multiply-add-shift, ``((a * x + b) mod 2**64) >> 32`` with
    random 64-bit ``a`` (odd) and ``b`` (Dietzfelbinger 1996, strongly universal for 32-bit
    outputs; uint64 arithmetic wraps, so it costs one multiply-add). We first used
    ``(a * x + b) mod (2**61 - 1)`` with 32-bit ``a, b`` to avoid overflow: its permutations are
    correlated and detected only 85% of pairs at Jaccard 0.8 instead of the theoretical 92%.
    """

    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg
        rng = np.random.RandomState(cfg.seed)
        n = cfg.bands * cfg.rows
        self.a = rng.randint(0, 1 << 63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.randint(0, 1 << 63, size=n, dtype=np.uint64) * np.uint64(2)
        self._mix = rng.randint(0, 1 << 63, size=cfg.ngram, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._word_hash: dict[str, int] = {}

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Sorted unique 32-bit hashes of the document's word n-grams.

        Each distinct word is hashed once with xxh3 (cached: words repeat), and an n-gram's hash
        is ``sum_k word_hash[i + k] * c_k mod 2**64`` with fixed odd ``c_k`` (a polynomial
        hash over words), high 32 bits kept. Vectorised, this is ~4x faster than hashing the
        joined n-gram strings and, for MinHash, equivalent: only equality of n-grams matters.
        """
        words = dedup_key(text).split()
        cache = self._word_hash
        if len(cache) > 2_000_000:  # bound the cache on huge vocabularies
            cache.clear()
        wh = np.fromiter((cache[w] if w in cache else cache.setdefault(w, xxhash.xxh3_64_intdigest(w.encode("utf-8")))
                          for w in words), np.uint64, len(words))
        n = min(self.cfg.ngram, max(len(words), 1))
        if wh.size == 0:
            return np.zeros(1, np.uint64)
        m = wh.size - n + 1
        g = np.zeros(m, np.uint64)
        for k in range(n):
            g += wh[k:k + m] * self._mix[k]
        return np.unique(g >> _SHIFT)

    def signature(self, text: str) -> np.ndarray:
        """(bands * rows,) uint64 minimum of each permuted 32-bit hash over the shingles."""
        x = self.shingle_hashes(text)
        out = np.full(self.a.size, np.uint64(0xFFFFFFFF), np.uint64)
        for start in range(0, x.size, 4096):  # chunked: bounded memory for very long documents
            chunk = x[start:start + 4096, None]
            np.minimum(out, ((chunk * self.a + self.b) >> _SHIFT).min(axis=0), out=out)
        return out

    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """(bands,) uint64: one hash of each band's ``rows`` values."""
        rows = self.cfg.rows
        return np.fromiter((xxhash.xxh3_64_intdigest(sig[i * rows:(i + 1) * rows].tobytes())
                            for i in range(self.cfg.bands)), np.uint64, self.cfg.bands)


class UnionFind:
    """Disjoint sets over the uids that appear in edges (memory grows with duplicates only)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


def cluster_removals(edge_arrays: list[np.ndarray], exclude: set[int] | None = None) -> dict[int, int]:
    """Union-find over edges; returns ``{removed uid: kept uid}`` where the kept document is the
    smallest ``(rank, uid)`` of its cluster. Edges touching ``exclude`` (documents already
    removed by an earlier stage) are ignored."""
    uf, rank_of = UnionFind(), {}
    exclude = exclude or set()
    for edges in edge_arrays:
        for kr, ku, dr, du in zip(edges["keep_rank"].tolist(), edges["keep_uid"].tolist(),
                                  edges["dup_rank"].tolist(), edges["dup_uid"].tolist()):
            if ku in exclude or du in exclude:
                continue
            rank_of[ku], rank_of[du] = kr, dr
            uf.union(ku, du)
    best: dict[int, tuple[int, int]] = {}
    for uid in rank_of:
        root = uf.find(uid)
        key = (rank_of[uid], uid)
        if root not in best or key < best[root]:
            best[root] = key
    return {uid: best[uf.find(uid)][1] for uid in rank_of if best[uf.find(uid)][1] != uid}
