"""Dedup: MinHash LSH on planted near-duplicates across two shards, exact dedup independent of
order and bucketing, signature-file validation, union-find clustering, exact-substring removal."""

import random

import numpy as np
import pytest

from data_pipeline.dedup.buckets import (SIG_DTYPE, SignatureFileError, bucket_dir, find_edges, load_checked,
                                         save_atomic, write_signatures)
from data_pipeline.dedup.exact import content_hash, id_rank
from data_pipeline.dedup.minhash import MinHashConfig, MinHasher, cluster_removals
from data_pipeline.dedup.substring import SubstringConfig, remove_repeats

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

_rng = random.Random(0)
_POOL = [f"w{i}x{_rng.randint(0, 10**6)}" for i in range(200_000)]
_next = iter(range(len(_POOL)))


def fresh(n):
    return [_POOL[next(_next)] for _ in range(n)]


def pair_at(jaccard, n_words=504):
    """Two docs whose word-5-gram sets have the given Jaccard: a shared prefix, then fresh words."""
    shingles = n_words - 4
    shared = int(np.ceil(jaccard * 2 * shingles / (1 + jaccard)))  # s / (2S - s) = J
    a = fresh(n_words)
    b = a[:shared + 4] + fresh(n_words - shared - 4)
    return " ".join(a), " ".join(b)


def dedup(shards, kind="minhash", num_buckets=1, tmp=None, cfg=MinHashConfig()):
    """Write each shard's signatures to disk, find edges per (band, bucket), cluster.
    ``shards`` is a list of lists of (uid, id, text). Returns {removed id: kept id}."""
    hasher = MinHasher(cfg)
    ids = {}
    for s, docs in enumerate(shards):
        uids = np.array([u for u, _, _ in docs], np.uint64)
        ranks = np.array([id_rank(i) for _, i, _ in docs], np.uint64)
        ids.update({u: i for u, i, _ in docs})
        if kind == "minhash":
            h = np.stack([hasher.band_hashes(hasher.signature(t)) for _, _, t in docs])
        else:
            h = np.array([[content_hash(t)] for _, _, t in docs], np.uint64)
        write_signatures(tmp, f"shard_{s}", h, ranks, uids, num_buckets)
    bands = cfg.bands if kind == "minhash" else 1
    edges = [find_edges(sorted(bucket_dir(tmp, b, k).glob("*.npy"))) for b in range(bands) for k in range(num_buckets)]
    return {ids[u]: ids[k] for u, k in cluster_removals(edges).items()}


def jaccard(a, b, hasher=MinHasher(MinHashConfig())):
    x, y = set(hasher.shingle_hashes(a).tolist()), set(hasher.shingle_hashes(b).tolist())
    return len(x & y) / len(x | y)


def test_minhash_finds_planted_near_duplicates_across_shards(tmp_path):
    shard0, shard1, planted = [], [], {}
    uid = 0
    for level in (0.9, 0.8, 0.3):
        for k in range(10):
            a, b = pair_at(level)
            assert abs(jaccard(a, b) - level) < 0.01
            shard0.append((uid, f"a{level}_{k}", a))
            shard1.append((uid + 1, f"b{level}_{k}", b))
            planted[frozenset((f"a{level}_{k}", f"b{level}_{k}"))] = level
            uid += 2
    removed = dedup([shard0, shard1], tmp=tmp_path)
    found = [planted.get(frozenset(p)) for p in removed.items()]
    assert None not in found  # no edge between unrelated documents
    # Detection probability 1 - (1 - J^8)^14: 0.9996 at J=0.9, 0.92 at J=0.8, 1e-4 at J=0.3.
    assert found.count(0.9) == 10
    assert found.count(0.8) >= 8
    assert found.count(0.3) == 0
    for dup, kept in removed.items():  # the survivor is the smaller id-rank of the pair
        assert id_rank(kept) < id_rank(dup)


def _exact_corpus():
    base = [" ".join(fresh(30)) for _ in range(6)]
    docs = []
    for i, t in enumerate(base):
        docs.append((f"doc{i}", t))
        if i % 2 == 0:  # duplicates differing in case and layout only
            docs.append((f"doc{i}_copy", t.upper()))
            docs.append((f"doc{i}_copy2", t.replace(" ", "\n  ")))
    return docs


@pytest.mark.parametrize("num_buckets", [1, 3])
def test_exact_dedup_is_order_and_shard_independent(tmp_path, num_buckets):
    docs = _exact_corpus()
    results = []
    for trial, seed in enumerate((0, 1, 2)):
        order = docs[:]
        random.Random(seed).shuffle(order)
        cut = len(order) // (trial + 1)
        shards = [[(u, i, t) for u, (i, t) in enumerate(order)][k:k + cut] for k in range(0, len(order), cut)]
        removed = dedup(shards, "exact", num_buckets, tmp_path / f"t{trial}")
        results.append(sorted(removed.items()))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 6  # two copies of each of three documents


def test_corrupt_and_unsorted_signature_files_are_named(tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"garbage")
    with pytest.raises(SignatureFileError, match="x.npy"):
        load_checked(bad, SIG_DTYPE)
    rec = np.zeros(3, SIG_DTYPE)
    rec["hash"] = [3, 1, 2]
    save_atomic(tmp_path / "u.npy", rec)
    with pytest.raises(SignatureFileError, match="u.npy.*not sorted"):
        load_checked(tmp_path / "u.npy", SIG_DTYPE)


def test_union_find_keeps_one_document_per_cluster():
    edges = np.zeros(2, dtype=[("keep_rank", "<u8"), ("keep_uid", "<u8"), ("dup_rank", "<u8"), ("dup_uid", "<u8")])
    edges[0] = (5, 1, 7, 2)  # 1-2
    edges[1] = (3, 3, 7, 2)  # 3-2: transitively 1-2-3; uid 3 has the smallest rank
    assert cluster_removals([edges]) == {1: 3, 2: 3}


def test_substring_removes_later_repeats_of_50_words():
    span50, span49 = " ".join(fresh(50)), " ".join(fresh(49))
    first = " ".join(fresh(20)) + " " + span50 + " " + span49 + " " + " ".join(fresh(10))
    second = " ".join(fresh(20)) + " " + span50 + " " + " ".join(fresh(10))
    third = " ".join(fresh(20)) + " " + span49 + " " + " ".join(fresh(10))
    out = remove_repeats([first, second, third], SubstringConfig(enabled=True))
    assert out[0] is first  # first occurrence kept untouched
    assert span50 not in out[1] and len(out[1].split()) == 30
    assert out[2] is third  # 49 words: below Lee et al.'s 50
    assert remove_repeats([span50, span50 + " end"], SubstringConfig(enabled=True))[1] is None
