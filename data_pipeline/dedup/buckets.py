"""On-disk, bucketed signature files and the duplicate edges found in them.

Why on disk and bucketed: a global dedup must compare documents across every shard and process,
and holding all signatures in RAM is what makes existing tools blow up. Each ingest shard writes,
for every (band, bucket), one small file of records ``(hash, rank, uid)`` **sorted** by
``(hash, rank, uid)``; a record lands in bucket ``hash % num_buckets``. A dedup task then loads
one (band, bucket) at a time: peak memory is about ``24 bytes * documents / num_buckets``, which
``num_buckets`` bounds. Files are written to a temporary name and renamed (a crash never leaves a
half-written file under the final name) and validated on load (dtype, sortedness), so an
unsorted or corrupt file is an error naming the file, never a silent wrong answer.

``uid`` is the document's stable identity (input file index << 40 | position in that file);
``rank`` is a hash of its id: of a group of duplicates we keep the smallest ``(rank, uid)``, so
which copy survives does not depend on input order or sharding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from typed_yaml.files import atomic_path

SIG_DTYPE = np.dtype([("hash", "<u8"), ("rank", "<u8"), ("uid", "<u8")])
EDGE_DTYPE = np.dtype([("keep_rank", "<u8"), ("keep_uid", "<u8"), ("dup_rank", "<u8"), ("dup_uid", "<u8")])


def full_sig_dtype(hashes: int) -> np.dtype:
    """One document's full MinHash signature (its ``hashes`` 32-bit minima), for Jaccard estimates."""
    return np.dtype([("uid", "<u8"), ("sig", "<u4", (hashes,))])


class SignatureFileError(RuntimeError):
    """A signature or edge file is corrupt or unsorted; the message names the file."""


def save_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def bucket_dir(root: Path, band: int, bucket: int) -> Path:
    return root / f"b{band:03d}_k{bucket:03d}"


def write_signatures(root: Path, shard: str, hashes: np.ndarray, ranks: np.ndarray,
                     uids: np.ndarray, num_buckets: int) -> None:
    """Write one shard's records. ``hashes`` is (docs, bands) uint64; ``ranks``/``uids`` (docs,)."""
    docs, bands = hashes.shape
    for band in range(bands):
        rec = np.empty(docs, SIG_DTYPE)
        rec["hash"], rec["rank"], rec["uid"] = hashes[:, band], ranks, uids
        bucket_of = rec["hash"] % np.uint64(num_buckets)
        for bucket in range(num_buckets):
            part = np.sort(rec[bucket_of == bucket], order=["hash", "rank", "uid"])
            save_atomic(bucket_dir(root, band, bucket) / f"{shard}.npy", part)


def write_full_signatures(root: Path, shard: str, uids: np.ndarray, sigs: np.ndarray) -> None:
    """Write one shard's (docs, hashes) uint32 signatures as ``root/<shard>.npy``, sorted by uid."""
    rec = np.empty(len(uids), full_sig_dtype(sigs.shape[1]))
    rec["uid"], rec["sig"] = uids, sigs
    save_atomic(root / f"{shard}.npy", np.sort(rec, order="uid"))


def load_full_signatures(root: Path, shard: str, uids: list[int], hashes: int) -> dict[int, np.ndarray]:
    """uid -> (hashes,) uint32 signature for the requested ``uids`` of one shard; {} for a folder
    prepared before full signatures were kept (its Jaccard estimates are then absent)."""
    path = root / f"{shard}.npy"
    if not path.exists():
        return {}
    rec = load_checked(path, full_sig_dtype(hashes))
    at = np.searchsorted(rec["uid"], np.asarray(sorted(uids), np.uint64))
    return {int(rec["uid"][i]): rec["sig"][i] for i in at if i < rec.size and int(rec["uid"][i]) in uids}


def load_checked(path: Path, dtype: np.dtype) -> np.ndarray:
    """Load a record file, raising :class:`SignatureFileError` if it is unreadable, of the wrong
    dtype, or (for signatures) not sorted by hash."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SignatureFileError(f"{path}: unreadable signature file ({exc}); delete it and re-run") from None
    if arr.dtype != dtype or arr.ndim != 1:
        raise SignatureFileError(f"{path}: dtype {arr.dtype} shape {arr.shape}, expected 1-D {dtype}")
    if dtype == SIG_DTYPE and arr.size > 1 and np.any(arr["hash"][1:] < arr["hash"][:-1]):
        raise SignatureFileError(f"{path}: records are not sorted by hash")
    return arr


def find_edges(files: list[Path]) -> np.ndarray:
    """Merge one (band, bucket)'s shard files and return, for every group of records sharing a
    hash, an edge from the group's smallest (rank, uid) to each other member. Star edges (not all
    pairs) suffice for union-find and keep the output linear in the group size."""
    parts = [load_checked(f, SIG_DTYPE) for f in sorted(files)]
    if not parts:
        return np.empty(0, EDGE_DTYPE)
    rec = np.concatenate(parts)
    rec = rec[np.lexsort((rec["uid"], rec["rank"], rec["hash"]))]
    h = rec["hash"]
    if h.size < 2:
        return np.empty(0, EDGE_DTYPE)
    starts = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
    group_start = starts[np.searchsorted(starts, np.arange(h.size), side="right") - 1]
    dup = np.arange(h.size) != group_start
    # The same document can appear twice in a group only if it was written twice (a bug); drop
    # self-edges rather than let them hide.
    dup &= rec["uid"] != rec["uid"][group_start]
    edges = np.empty(int(dup.sum()), EDGE_DTYPE)
    edges["keep_rank"], edges["keep_uid"] = rec["rank"][group_start[dup]], rec["uid"][group_start[dup]]
    edges["dup_rank"], edges["dup_uid"] = rec["rank"][dup], rec["uid"][dup]
    return edges
