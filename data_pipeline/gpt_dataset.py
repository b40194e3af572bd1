"""Pretraining datasets: fixed-length samples packed from a token stream, and weighted blends.

``PackedDataset`` reads one ``IndexedDataset`` (documents already end with EOS) as a single flat
token stream. The stream is split into a train range followed by a valid range; each range is cut
into samples of ``seq_len + 1`` tokens, consecutive samples sharing one token (the last target of
sample j is the first input of sample j+1, as in Megatron's GPTDataset and nanoGPT), so every
token of a range but the final partial sample is trained on. Samples cross document boundaries.

``BlendedDataset`` mixes several datasets with Megatron-LM's greedy rule
(``megatron/core/datasets/helpers.cpp``, ``build_blending_indices``).

Everything is a pure function of (files, arguments, seed): the trainer addresses samples by
index and keeps its own position, so there is no iterator state to checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data_pipeline.errors import DataError
from data_pipeline.indexed import IndexedDataset

SPLITS = ("train", "valid")


class PackedDataset(Dataset):
    """Fixed-length samples of seq_len+1 tokens cut from the concatenated token stream.

    Documents end with EOS and samples cross document boundaries; train and valid are contiguous
    token ranges; the sample order is shuffled by a seeded permutation.

    Args:
        prefix: path prefix of the ``.bin``/``.idx`` pair.
        seq_len: tokens the model sees per sample; each sample holds ``seq_len + 1`` so that
            inputs are ``x[:-1]`` and targets ``x[1:]``.
        split: ``"train"`` (the first ``1 - valid_fraction`` of the tokens) or ``"valid"``
            (the rest). The two ranges share no token.
        valid_fraction: fraction of the stream's tokens held out, in [0, 1).
        seed: seeds the sample order.

    Raises ValueError on bad arguments or when the split is too short for one sample.
    """

    def __init__(self, prefix, seq_len: int, split: str = "train", valid_fraction: float = 0.05,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {split!r}")
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1, got {seq_len}")
        if not 0.0 <= valid_fraction < 1.0:
            raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        self.prefix = str(prefix)
        self.seq_len = int(seq_len)
        self.split = split
        self.seed = int(seed)
        self.tokens = IndexedDataset(prefix)

        total = self.tokens.num_tokens()
        n_valid = int(round(total * valid_fraction))
        # (start, stop) of this split's token range in the flat stream.
        self.token_range = (0, total - n_valid) if split == "train" else (total - n_valid, total)
        available = self.token_range[1] - self.token_range[0]
        self.num_samples = max(0, (available - 1) // self.seq_len)
        if self.num_samples == 0:
            raise DataError(
                f"{self.prefix}: the {split!r} split has {available} tokens "
                f"(of {total}, valid_fraction={valid_fraction}), but one sample needs "
                f"seq_len + 1 = {self.seq_len + 1}; use more data, a shorter seq_len or "
                "another valid_fraction")
        # RandomState, not default_rng: its stream is frozen across NumPy versions, so a seed
        # names the same order on every machine (NumPy's compatibility policy, NEP 19).
        index_dtype = np.int32 if self.num_samples < 2**31 else np.int64
        self._order = np.random.RandomState(self.seed).permutation(self.num_samples).astype(index_dtype)

    def __len__(self) -> int:
        return self.num_samples

    def sample_start(self, i: int) -> int:
        """Offset in the flat token stream where sample ``i`` begins."""
        return self.token_range[0] + int(self._order[i]) * self.seq_len

    def __getitem__(self, i) -> torch.LongTensor:
        i = int(i)
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for {self.num_samples} {self.split} samples")
        tokens = self.tokens.get_tokens(self.sample_start(i % self.num_samples), self.seq_len + 1)
        return torch.from_numpy(tokens.astype(np.int64))


class BlendedDataset(Dataset):
    """Several PackedDatasets mixed by weights with Megatron's rule.

    Sample k goes to the dataset whose achieved count is furthest below ``weight * k``.

    Args:
        datasets: the sources (any map-style datasets).
        weights: non-negative, not all zero; normalised to sum to 1.
        size: number of samples; default the sum of the sources' lengths. A source asked for
            more samples than it holds starts over from its first sample (another epoch of it).

    Ties go to the lower source index; ``weight * k`` uses ``max(k, 1)`` as Megatron does. Each
    source's achieved count stays within one sample of ``weight * size``.
    """

    def __init__(self, datasets: list, weights: list[float], size: int | None = None) -> None:
        if not datasets:
            raise DataError("BlendedDataset needs at least one dataset")
        if len(weights) != len(datasets):
            raise DataError(f"{len(weights)} weights for {len(datasets)} datasets")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise DataError(f"weights must be finite, non-negative and not all zero, got {list(weights)}")
        self.datasets = list(datasets)
        self.weights = w / w.sum()
        self.size = int(size) if size is not None else sum(len(d) for d in self.datasets)
        if self.size < 0:
            raise DataError(f"size must be >= 0, got {size}")
        for k, (d, wk) in enumerate(zip(self.datasets, self.weights)):
            if wk > 0 and len(d) == 0:
                raise DataError(f"dataset {k} has weight {wk:.4g} but no samples")
        self.dataset_index, self.dataset_sample_index = _blending_indices(self.weights, self.size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):
        i = int(i)
        if not -self.size <= i < self.size:
            raise IndexError(f"sample {i} out of range for {self.size} blended samples")
        source = self.datasets[int(self.dataset_index[i])]
        return source[int(self.dataset_sample_index[i]) % len(source)]

    def source_counts(self) -> dict[int, int]:
        """Samples drawn from each source, keyed by its position in ``datasets``."""
        counts = np.bincount(self.dataset_index, minlength=len(self.datasets))
        return {k: int(c) for k, c in enumerate(counts)}


def _blending_indices(weights: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Megatron's ``build_blending_indices``: which source serves each sample, and which of its samples.

    A plain Python loop (about 1 s per million samples for a few sources); Megatron compiles
    the same loop in C++ because its blends reach billions of samples.
    """
    n = len(weights)
    w = [float(x) for x in weights]
    counts = [0] * n
    dataset_index = np.empty(size, dtype=np.int16)
    dataset_sample_index = np.empty(size, dtype=np.int64)
    for k in range(size):
        target = max(k, 1)
        best, best_error = 0, w[0] * target - counts[0]
        for j in range(1, n):
            error = w[j] * target - counts[j]
            if error > best_error:
                best, best_error = j, error
        dataset_index[k] = best
        dataset_sample_index[k] = counts[best]
        counts[best] += 1
    return dataset_index, dataset_sample_index


def build_dataset(paths: list[str], weights: list[float] | None, seq_len, split, valid_fraction,
                  seed) -> Dataset:
    """One ``PackedDataset`` per prefix in ``paths``, blended when there are several.

    ``weights=None`` mixes sources in proportion to their sample counts (the natural mix); a
    single path ignores weights. Every source uses the same ``seed``, ``seq_len`` and
    ``valid_fraction``.
    """
    if not paths:
        raise DataError("build_dataset needs at least one dataset prefix")
    if weights is not None and len(weights) != len(paths):
        raise DataError(f"{len(weights)} weights for {len(paths)} dataset prefixes {list(paths)}")
    sources = [PackedDataset(Path(p), seq_len, split, valid_fraction, seed) for p in paths]
    if len(sources) == 1:
        return sources[0]
    if weights is None:
        weights = [len(s) for s in sources]
    return BlendedDataset(sources, weights)
