"""Which kept document each near-duplicate stands for, its Jaccard to it, and the optional exact re-check.

LSH makes a pair a *candidate* when one band of their signatures agrees; union-find then joins
candidates into clusters and keeps one document per cluster (``minhash.cluster_removals``). Two
things follow that a reader of ``dropped/`` cannot see without this module: a candidate pair
may be far below the S-curve's midpoint (a band agrees by chance), and in a chain A~B~C the
document C is dropped for A even when C and A share little.

``assign`` walks each cluster in keep order (smallest ``(rank, uid)`` first) and gives every
member the kept document nearest to it:

* ``threshold=None`` (FineWeb, which does not verify): the cluster's first member is kept and
  every other is dropped, as union-find decided; the nearest kept document is then that one.
* ``threshold=t`` (``dedup.minhash.verify``): a member is dropped only if some already kept
  member of its cluster has Jaccard >= t with it, and it names the most similar one; otherwise
  it is kept (a false candidate kept back). Every near-duplicate drop then has a kept document
  at >= t: no chains. Each member is compared with the cluster's kept members only: one
  comparison when a cluster is all true duplicates, but members x kept ones for a family of
  templated pages that LSH joined and the re-check splits (2,400 rustdoc pages: 0.2-0.4 s,
  bench/results_dedup_verify.json); a cluster of 10^5 distinct pages would take hours.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np


def clusters(removals: dict[int, int], rank_of: Callable[[int], int]) -> list[list[int]]:
    """The clusters of ``{removed uid: kept uid}``, each a list of uids in keep order (kept one first)."""
    members: dict[int, list[int]] = defaultdict(list)
    for uid, kept in removals.items():
        members[kept].append(uid)
    return [[k] + sorted(m, key=lambda u: (rank_of(u), u)) for k, m in sorted(members.items())]


def assign(cluster: list[int], similarity: Callable[[int, list[int]], np.ndarray],
           threshold: float | None) -> dict[int, tuple[int, float]]:
    """``{dropped uid: (kept uid it duplicates, its similarity)}`` for one cluster in keep order.
    ``similarity(u, kept)`` returns u's Jaccard to each of ``kept``."""
    kept, out = [cluster[0]], {}
    for uid in cluster[1:]:
        sims = similarity(uid, kept)
        best = int(np.argmax(sims))
        if threshold is None or sims[best] >= threshold:
            out[uid] = (kept[best], float(sims[best]))
        else:
            kept.append(uid)
    return out


def estimated_jaccard(sig: np.ndarray, others: np.ndarray) -> np.ndarray:
    """MinHash's estimate: the fraction of the (hashes,) signature equal in each row of ``others``."""
    return (others == sig).mean(axis=1)


def exact_jaccard(shingles: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """|A & B| / |A | B| of sorted unique shingle-hash arrays (``MinHasher.shingle_hashes``)."""
    out = np.empty(len(others))
    for i, other in enumerate(others):
        inter = np.intersect1d(shingles, other, assume_unique=True).size
        out[i] = inter / (shingles.size + other.size - inter)
    return out
