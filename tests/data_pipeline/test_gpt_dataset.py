"""Tests for data_pipeline.gpt_dataset (packing, splits, blending)."""

import pickle

import numpy as np
import pytest
import torch

from data_pipeline.gpt_dataset import BlendedDataset, PackedDataset, build_dataset
from data_pipeline.indexed import IndexedDatasetBuilder

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def _make_stream(prefix, n_tokens, seed=0):
    """Documents of random length whose tokens are their stream positions (mod 2**16)."""
    rng = np.random.RandomState(seed)
    stream = np.arange(n_tokens, dtype=np.int64) % 65536
    cuts = np.sort(rng.choice(np.arange(1, n_tokens), size=n_tokens // 50, replace=False))
    with IndexedDatasetBuilder(prefix, dtype=np.uint16) as builder:
        for doc in np.split(stream, cuts):
            builder.add_document(doc)
    return stream


@pytest.fixture
def stream_prefix(tmp_path):
    prefix = tmp_path / "stream"
    return prefix, _make_stream(prefix, 10_007)


def test_samples_are_stream_windows(stream_prefix):
    prefix, stream = stream_prefix
    ds = PackedDataset(prefix, seq_len=64, split="train", valid_fraction=0.1, seed=3)
    for i in range(len(ds)):
        sample = ds[i]
        assert sample.dtype == torch.int64 and sample.shape == (65,)
        start = ds.sample_start(i)
        assert sample.tolist() == stream[start:start + 65].tolist()


def test_splits_cover_stream_without_overlap(stream_prefix):
    prefix, stream = stream_prefix
    seq_len = 64
    train = PackedDataset(prefix, seq_len, "train", valid_fraction=0.1)
    valid = PackedDataset(prefix, seq_len, "valid", valid_fraction=0.1)
    n_valid = round(len(stream) * 0.1)
    assert train.token_range == (0, len(stream) - n_valid)
    assert valid.token_range == (len(stream) - n_valid, len(stream))

    for ds in (train, valid):
        lo, hi = ds.token_range
        starts = sorted(ds.sample_start(i) for i in range(len(ds)))
        # Every sample once, back to back (sharing one token), and as many as fit.
        assert starts == list(range(lo, lo + len(ds) * seq_len, seq_len))
        assert starts[-1] + seq_len + 1 <= hi < starts[-1] + 2 * seq_len + 1

    train_tokens = {t for i in range(len(train)) for t in train[i].tolist()}
    valid_tokens = {t for i in range(len(valid)) for t in valid[i].tolist()}
    assert not train_tokens & valid_tokens  # tokens equal positions, so this checks positions


def test_order_is_seeded_and_reproducible(stream_prefix):
    prefix, _ = stream_prefix
    a = PackedDataset(prefix, 32, seed=7)
    b = PackedDataset(prefix, 32, seed=7)
    c = PackedDataset(prefix, 32, seed=8)
    order = [a.sample_start(i) for i in range(len(a))]
    assert order == [b.sample_start(i) for i in range(len(b))]
    assert order != [c.sample_start(i) for i in range(len(c))]
    assert order != sorted(order)
    assert torch.equal(a[5], b[5])


def test_too_short_split_is_a_clear_error(stream_prefix):
    prefix, _ = stream_prefix
    with pytest.raises(ValueError) as err:
        PackedDataset(prefix, seq_len=1000, split="valid", valid_fraction=0.05)
    message = str(err.value)
    assert str(prefix) in message and "500 tokens" in message and "1001" in message
    with pytest.raises(ValueError, match="'valid' split has 0 tokens"):
        PackedDataset(prefix, seq_len=8, split="valid", valid_fraction=0.0)
    with pytest.raises(ValueError, match="split must be"):
        PackedDataset(prefix, seq_len=8, split="test")


def test_dataset_pickles_for_workers(stream_prefix):
    prefix, _ = stream_prefix
    ds = PackedDataset(prefix, 64)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3], ds[3])


class _Range:
    """A stand-in source whose samples name their source and index."""

    def __init__(self, tag, n):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.tag, i)


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [1, 1], [0.9, 0.1], [2, 0, 1]])
def test_blend_counts_track_weights_within_one(weights):
    size = 1000
    blend = BlendedDataset([_Range(k, 50) for k in range(len(weights))], weights, size=size)
    w = np.asarray(weights, float) / sum(weights)
    # After every prefix of k samples, each source's count is within 1 of weight * k.
    onehot = np.eye(len(weights), dtype=np.int64)[blend.dataset_index]
    achieved = np.cumsum(onehot, axis=0)
    expected = np.outer(np.arange(1, size + 1), w)
    assert np.abs(achieved - expected).max() <= 1.0
    counts = blend.source_counts()
    assert sum(counts.values()) == size
    assert all(abs(counts[k] - w[k] * size) <= 1 for k in range(len(weights)))


def test_blend_matches_megatron_first_samples():
    # Megatron's rule by hand for weights (0.5, 0.3, 0.2): k=0 and k=1 both use max(k, 1) = 1.
    blend = BlendedDataset([_Range(k, 10) for k in range(3)], [0.5, 0.3, 0.2], size=6)
    assert blend.dataset_index.tolist() == [0, 1, 2, 0, 1, 0]
    assert [blend[i] for i in range(6)] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2)]


def test_blend_wraps_small_source_and_is_deterministic():
    blend = BlendedDataset([_Range("a", 3), _Range("b", 100)], [0.5, 0.5], size=20)
    a_items = [blend[i][1] for i in range(20) if blend[i][0] == "a"]
    assert a_items == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    again = BlendedDataset([_Range("a", 3), _Range("b", 100)], [0.5, 0.5], size=20)
    assert [again[i] for i in range(20)] == [blend[i] for i in range(20)]
    with pytest.raises(ValueError, match="weights"):
        BlendedDataset([_Range("a", 3)], [-1.0])


def test_build_dataset_blends_prefixes(tmp_path):
    _make_stream(tmp_path / "a", 4000, seed=1)
    _make_stream(tmp_path / "b", 2000, seed=2)
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    single = build_dataset(paths[:1], None, 32, "train", 0.05, 0)
    assert isinstance(single, PackedDataset)
    natural = build_dataset(paths, None, 32, "train", 0.05, 0)
    assert isinstance(natural, BlendedDataset)
    assert len(natural) == sum(len(d) for d in natural.datasets)
    assert natural.source_counts() == {0: len(natural.datasets[0]), 1: len(natural.datasets[1])}
    weighted = build_dataset(paths, [0.25, 0.75], 32, "valid", 0.05, 0)
    counts = weighted.source_counts()
    assert abs(counts[1] - 0.75 * len(weighted)) <= 1
    assert weighted[0].shape == (33,)
    with pytest.raises(ValueError, match="2 weights for 1"):
        build_dataset(paths[:1], [0.5, 0.5], 32, "train", 0.05, 0)
