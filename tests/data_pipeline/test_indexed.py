"""Tests for data_pipeline.indexed: round trips, the exact Megatron byte layout, and clear errors."""

import pickle
import struct

import numpy as np
import pytest

from data_pipeline.indexed import (
    INDEX_MAGIC,
    IndexedDataset,
    IndexedDatasetBuilder,
    dtype_for_vocab,
)

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

DOCS = [[5, 6, 7], [], [1], list(range(100, 140))]


def _write(prefix, docs, dtype):
    with IndexedDatasetBuilder(prefix, dtype=dtype) as builder:
        for doc in docs:
            builder.add_document(doc)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float32])
def test_round_trip(tmp_path, dtype):
    prefix = tmp_path / "ds"
    _write(prefix, DOCS, dtype)
    ds = IndexedDataset(prefix)
    assert ds.dtype == np.dtype(dtype)
    assert len(ds) == len(DOCS)
    assert ds.sizes.dtype == np.int32
    assert ds.sizes.tolist() == [len(d) for d in DOCS]
    for i, doc in enumerate(DOCS):
        assert ds[i].dtype == np.dtype(dtype)
        assert ds[i].tolist() == doc
    assert ds[-1].tolist() == DOCS[-1]
    flat = [t for d in DOCS for t in d]
    assert ds.num_tokens() == len(flat)
    assert ds.get_tokens(2, 5).tolist() == flat[2:7]
    with pytest.raises(IndexError):
        ds[len(DOCS)]
    with pytest.raises(IndexError):
        ds.get_tokens(len(flat) - 1, 2)


def test_index_byte_layout(tmp_path):
    """Every byte of .idx and .bin as Megatron-LM's _IndexWriter lays them out."""
    prefix = tmp_path / "ds"
    docs = [[1, 2, 3], [4], [5, 6]]
    _write(prefix, docs, np.uint16)
    expected_idx = (
        b"MMIDIDX\x00\x00"
        + struct.pack("<Q", 1)  # version
        + struct.pack("<B", 8)  # Megatron's code for uint16
        + struct.pack("<Q", 3)  # sequences
        + struct.pack("<Q", 4)  # document-index entries: 0 and one per document end
        + struct.pack("<3i", 3, 1, 2)  # sizes, int32
        + struct.pack("<3q", 0, 6, 8)  # byte pointers, int64
        + struct.pack("<4q", 0, 1, 2, 3)  # document index, int64
    )
    assert expected_idx.startswith(INDEX_MAGIC)
    assert (tmp_path / "ds.idx").read_bytes() == expected_idx
    assert (tmp_path / "ds.bin").read_bytes() == struct.pack("<6H", 1, 2, 3, 4, 5, 6)
    assert IndexedDataset(prefix).document_indices.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("dtype, code", [(np.uint8, 1), (np.int8, 2), (np.int16, 3), (np.int32, 4),
                                         (np.int64, 5), (np.float64, 6), (np.float32, 7),
                                         (np.uint16, 8)])
def test_dtype_codes(tmp_path, dtype, code):
    _write(tmp_path / "ds", [[1]], dtype)
    assert (tmp_path / "ds.idx").read_bytes()[17] == code


def _corrupt(tmp_path, mutate):
    prefix = tmp_path / "ds"
    _write(prefix, DOCS, np.uint16)
    idx = tmp_path / "ds.idx"
    idx.write_bytes(mutate(idx.read_bytes()))
    return prefix


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b"XXIDIDX\x00\x00" + b[9:], "bad magic"),
    (lambda b: b[:9] + struct.pack("<Q", 2) + b[17:], "version 2"),
    (lambda b: b[:17] + b"\x09" + b[18:], "dtype code 9"),
])
def test_corrupt_index_errors_name_the_file(tmp_path, mutate, message):
    prefix = _corrupt(tmp_path, mutate)
    with pytest.raises(ValueError, match=message) as err:
        IndexedDataset(prefix)
    assert str(tmp_path / "ds.idx") in str(err.value)


def test_truncated_bin_is_detected(tmp_path):
    prefix = tmp_path / "ds"
    _write(prefix, DOCS, np.uint16)
    data = (tmp_path / "ds.bin").read_bytes()
    (tmp_path / "ds.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="mismatched or truncated") as err:
        IndexedDataset(prefix)
    assert str(tmp_path / "ds.bin") in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        IndexedDataset(tmp_path / "nothing")


def test_failed_build_leaves_no_files(tmp_path):
    prefix = tmp_path / "ds"
    _write(prefix, DOCS, np.uint16)
    with pytest.raises(RuntimeError):
        with IndexedDatasetBuilder(prefix) as builder:
            builder.add_document([1, 2])
            raise RuntimeError("crash while tokenizing")
    # The earlier complete pair is untouched and no temporary file is left behind.
    assert IndexedDataset(prefix)[0].tolist() == DOCS[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.bin", "ds.idx"]


def test_rebuild_replaces_old_pair(tmp_path):
    prefix = tmp_path / "ds"
    _write(prefix, DOCS, np.uint16)
    _write(prefix, [[9, 9]], np.int32)
    ds = IndexedDataset(prefix)
    assert ds.dtype == np.int32 and len(ds) == 1 and ds[0].tolist() == [9, 9]


def test_out_of_range_token_rejected(tmp_path):
    builder = IndexedDatasetBuilder(tmp_path / "ds", dtype=np.uint16)
    with pytest.raises(ValueError, match="outside"):
        builder.add_document([70000])
    with pytest.raises(ValueError, match="outside"):
        builder.add_document([-1])


def test_empty_dataset(tmp_path):
    _write(tmp_path / "ds", [], np.uint16)
    ds = IndexedDataset(tmp_path / "ds")
    assert len(ds) == 0 and ds.num_tokens() == 0


def test_pickle_reopens_maps(tmp_path):
    _write(tmp_path / "ds", DOCS, np.uint16)
    ds = IndexedDataset(tmp_path / "ds")
    blob = pickle.dumps(ds)
    assert len(blob) < 500  # the maps are reopened, not copied
    assert pickle.loads(blob)[3].tolist() == DOCS[3]


def test_dtype_for_vocab():
    assert dtype_for_vocab(32000) == np.uint16
    assert dtype_for_vocab(65499) == np.uint16
    assert dtype_for_vocab(65500) == np.int32
    assert dtype_for_vocab(128256) == np.int32


def test_torch_tensor_documents(tmp_path):
    torch = pytest.importorskip("torch")
    _write(tmp_path / "ds", [torch.tensor([3, 4, 5])], np.uint16)
    assert IndexedDataset(tmp_path / "ds")[0].tolist() == [3, 4, 5]


def test_megatron_parity(tmp_path):
    """When megatron-core is installed, both builders write identical bytes and read each other."""
    megatron = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    torch = pytest.importorskip("torch")
    docs = [d for d in DOCS if d]
    _write(tmp_path / "ours", docs, np.uint16)
    theirs = megatron.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.uint16)
    for doc in docs:
        theirs.add_item(torch.tensor(doc))
        theirs.end_document()
    theirs.finalize(str(tmp_path / "theirs.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"theirs.{ext}").read_bytes()
    read_by_megatron = megatron.IndexedDataset(str(tmp_path / "ours"))
    assert [read_by_megatron[i].tolist() for i in range(len(docs))] == docs
