"""Near-duplicate detection with MinHash LSH (Broder 1997; as in FineWeb, Penedo et al. 2024,
arXiv:2406.17557, Sec. 3.3: word 5-grams, 112 hashes as 14 bands x 8 rows).

A pair of documents with Jaccard similarity s over their shingle sets becomes a candidate with
probability 1 - (1 - s**rows)**bands: with 14 x 8 that is 0.9996 at s=0.9, 0.92 at s=0.8, 0.45 at
s=0.7 and 1e-4 at s=0.3 (the S-curve's midpoint is near (1/bands)**(1/rows) = 0.72).
Candidates are not re-verified against their true Jaccard, as in FineWeb and datasketch's
MinHashLSH; clusters come from union-find over candidate edges and keep one document each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from data_pipeline.normalize import dedup_key

MERSENNE_61 = np.uint64((1 << 61) - 1)  # the prime of the universal hash family (a*x + b) mod p


@dataclass
class MinHashConfig:
    """Near-dedup settings; defaults follow FineWeb."""

    enabled: bool = True
    ngram: int = 5
    """Words per shingle (FineWeb: 5)."""
    bands: int = 14
    rows: int = 8
    """bands x rows = hashes per document (FineWeb: 14 x 8 = 112)."""
    seed: int = 1
    num_buckets: int = 1
    """Split each band's signatures into this many files by hash, bounding a dedup task's memory
    to about 24 B x documents / num_buckets."""


class MinHasher:
    """Computes a document's MinHash signature and LSH band hashes.

    Shingles are word ``ngram``-grams of :func:`dedup_key` (lower-cased, whitespace-collapsed);
    a document shorter than ``ngram`` words is one shingle. Each shingle is hashed to 32 bits
    with xxh3, so ``a * x + b`` with 32-bit ``a, b`` cannot overflow uint64 before the mod.
    """

    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg
        rng = np.random.RandomState(cfg.seed)
        n = cfg.bands * cfg.rows
        self.a = rng.randint(1, 1 << 32, size=n, dtype=np.uint64)
        self.b = rng.randint(0, 1 << 32, size=n, dtype=np.uint64)

    def shingle_hashes(self, text: str) -> np.ndarray:
        words = dedup_key(text).split()
        n = self.cfg.ngram
        grams = [" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))]
        return np.unique(np.fromiter((xxhash.xxh3_64_intdigest(g.encode("utf-8")) & 0xFFFFFFFF for g in grams),
                                     np.uint64, len(grams)))

    def signature(self, text: str) -> np.ndarray:
        """(bands * rows,) uint64 minimum of each permuted hash over the shingles."""
        x = self.shingle_hashes(text)
        out = np.full(self.a.size, MERSENNE_61, np.uint64)
        for start in range(0, x.size, 4096):  # chunked: bounded memory for very long documents
            chunk = x[start:start + 4096, None]
            np.minimum(out, ((chunk * self.a + self.b) % MERSENNE_61).min(axis=0), out=out)
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
