"""Memory-mapped token storage in Megatron-LM's ``.bin`` + ``.idx`` format.

A dataset is a pair of files sharing a prefix:

* ``prefix.bin``: the token ids of every sequence, concatenated, as raw little-endian values of
  one dtype.
* ``prefix.idx``: the index, laid out as Megatron-LM's ``_IndexWriter`` writes it
  (``megatron/core/datasets/indexed_dataset.py``)::

      9 bytes   magic  b"MMIDIDX\\x00\\x00"
      <Q        version, always 1
      <B        dtype code (table ``DTYPE_CODES`` below)
      <Q        sequence count S
      <Q        document-index length D (= documents + 1)
      S x int32 sequence lengths in tokens
      S x int64 byte offset of each sequence in ``.bin``
      D x int64 document index: 0, then the sequence count after each document ends

Files written here load in Megatron's ``IndexedDataset`` and vice versa. This builder stores one
sequence per document, so sequences and documents coincide; files from Megatron that split
documents into sentences load too, and then ``len()`` counts sequences.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from data_pipeline.errors import DataError
from typed_yaml.files import atomic_path

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# Megatron-LM's ``DType`` enum; the codes are what goes on disk, so they must never change.
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float64),
    7: np.dtype(np.float32),
    8: np.dtype(np.uint16),
}
_CODE_OF_DTYPE = {dt: code for code, dt in DTYPE_CODES.items()}
# magic + version + dtype code + sequence count + document-index length
HEADER_BYTES = len(INDEX_MAGIC) + 8 + 1 + 8 + 8


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest token dtype for ``vocab_size`` ids: uint16 below 65,500, else int32.

    65,500 (not 65,536) is Megatron's ``DType.optimal_dtype`` threshold, kept so both tools pick
    the same dtype for the same vocabulary.
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def _paths(prefix: str | Path) -> tuple[Path, Path]:
    prefix = str(prefix)
    return Path(prefix + ".bin"), Path(prefix + ".idx")


class IndexedDatasetBuilder:
    """Writes ``prefix.bin`` and ``prefix.idx``, one document per ``add_document`` call.

    Tokens go to ``prefix.bin.tmp`` as they arrive; ``finalize`` moves it to ``prefix.bin`` and
    then writes ``prefix.idx`` through a temporary file and ``os.replace``. Any old ``prefix.idx``
    is deleted before the new ``.bin`` lands, so a crash at any point leaves either no ``.idx`` or
    a complete, matching pair. As a context manager it finalizes on success and deletes the
    temporary file on error.
    """

    def __init__(self, prefix: str | Path, dtype=np.uint16) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF_DTYPE:
            raise ValueError(f"dtype {self.dtype} has no Megatron code; use one of "
                             f"{sorted(str(d) for d in _CODE_OF_DTYPE)}")
        self.bin_path, self.idx_path = _paths(prefix)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = self.bin_path.with_name(self.bin_path.name + ".tmp")
        self._file = open(self._tmp_bin, "wb")
        self._sizes: list[int] = []
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            self._range = (int(info.min), int(info.max))
        else:
            self._range = None

    def add_document(self, tokens) -> None:
        """Append one document (a sequence of token ids; list, array or tensor).

        Raises ValueError if an id does not fit the dtype (a silent wrap-around would corrupt data).
        """
        if self._file is None:
            raise RuntimeError(f"builder for {self.bin_path} is already finalized")
        if hasattr(tokens, "numpy"):  # torch tensor, without importing torch here
            tokens = tokens.numpy()
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError(f"a document must be 1-D, got shape {arr.shape}")
        if self._range is not None and arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < self._range[0] or hi > self._range[1]:
                raise ValueError(f"token ids span [{lo}, {hi}], outside {self.dtype}'s range "
                                 f"{self._range}; pick the dtype with dtype_for_vocab()")
        self._file.write(arr.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.append(arr.size)

    def finalize(self) -> None:
        """Close the data file and write the index; the builder cannot be used afterwards."""
        if self._file is None:
            raise RuntimeError(f"builder for {self.bin_path} is already finalized")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

        sizes = np.asarray(self._sizes, dtype=np.int64)
        if sizes.size and sizes.max() > np.iinfo(np.int32).max:
            raise ValueError(f"a document of {sizes.max()} tokens exceeds the int32 size field")
        pointers = np.zeros(sizes.size, dtype=np.int64)
        np.cumsum(sizes[:-1] * self.dtype.itemsize, out=pointers[1:])
        doc_index = np.arange(sizes.size + 1, dtype=np.int64)

        self.idx_path.unlink(missing_ok=True)
        os.replace(self._tmp_bin, self.bin_path)
        with atomic_path(self.idx_path) as tmp_idx, open(tmp_idx, "wb") as f:
            f.write(INDEX_MAGIC)
            f.write(struct.pack("<Q", INDEX_VERSION))
            f.write(struct.pack("<B", _CODE_OF_DTYPE[self.dtype]))
            f.write(struct.pack("<Q", sizes.size))
            f.write(struct.pack("<Q", doc_index.size))
            f.write(sizes.astype(np.int32).tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(doc_index.tobytes(order="C"))

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp_bin.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self._abort()


class IndexedDataset:
    """Read-only view of a ``prefix.bin`` / ``prefix.idx`` pair through ``np.memmap``.

    Raises FileNotFoundError if a file is missing and ValueError naming the file when the index
    has a bad magic, version or dtype code, is truncated, or disagrees with the ``.bin`` size.
    Picklable (DataLoader workers reopen the maps instead of copying them).
    """

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = str(prefix)
        self.bin_path, self.idx_path = _paths(prefix)
        for path in (self.bin_path, self.idx_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (dataset prefix {self.prefix})")
        self._load_index()
        self._load_tokens()

    def _load_index(self) -> None:
        path = self.idx_path
        n_bytes = path.stat().st_size
        if n_bytes < HEADER_BYTES:
            raise DataError(f"{path}: truncated index ({n_bytes} bytes, header needs {HEADER_BYTES})")
        idx = np.memmap(path, dtype=np.uint8, mode="r")
        header = idx[:HEADER_BYTES].tobytes()
        if header[:9] != INDEX_MAGIC:
            raise DataError(f"{path}: bad magic {header[:9]!r}, expected {INDEX_MAGIC!r} "
                             "(not a Megatron MMapIndexedDataset index)")
        (version,) = struct.unpack_from("<Q", header, 9)
        if version != INDEX_VERSION:
            raise DataError(f"{path}: index version {version}, only {INDEX_VERSION} is supported")
        (code,) = struct.unpack_from("<B", header, 17)
        if code not in DTYPE_CODES:
            raise DataError(f"{path}: unknown dtype code {code}, expected one of {sorted(DTYPE_CODES)}")
        n_seq, n_doc_index = struct.unpack_from("<QQ", header, 18)
        need = HEADER_BYTES + n_seq * (4 + 8) + n_doc_index * 8
        # Megatron's multimodal indices append one int8 mode per sequence; those bytes are ignored.
        if n_bytes < need:
            raise DataError(f"{path}: truncated index ({n_bytes} bytes; header promises "
                             f"{n_seq} sequences and {n_doc_index} document entries = {need} bytes)")
        self.dtype: np.dtype = DTYPE_CODES[code]
        off = HEADER_BYTES
        self.sizes: np.ndarray = idx[off:off + 4 * n_seq].view(np.int32)
        off += 4 * n_seq
        self.pointers: np.ndarray = idx[off:off + 8 * n_seq].view(np.int64)
        off += 8 * n_seq
        self.document_indices: np.ndarray = idx[off:off + 8 * n_doc_index].view(np.int64)

    def _load_tokens(self) -> None:
        itemsize = self.dtype.itemsize
        expected = int(self.sizes.sum(dtype=np.int64)) * itemsize
        actual = self.bin_path.stat().st_size
        if actual != expected:
            raise DataError(f"{self.bin_path}: {actual} bytes, but {self.idx_path} describes "
                             f"{expected} bytes ({self.sizes.size} sequences of {self.dtype}); "
                             "the pair is mismatched or truncated")
        # np.memmap refuses empty files; an empty dataset is still a valid dataset.
        if actual == 0:
            self._tokens = np.empty(0, dtype=self.dtype)
        else:
            self._tokens = np.memmap(self.bin_path, dtype=self.dtype, mode="r")
        # Builders (ours and Megatron's) write sequences back to back, which is what makes
        # get_tokens() a plain slice; check it rather than assume it.
        ends = self.pointers + self.sizes.astype(np.int64) * itemsize
        if self.sizes.size and (self.pointers[0] != 0 or np.any(self.pointers[1:] != ends[:-1])):
            raise DataError(f"{self.idx_path}: sequence pointers are not contiguous")
        self._starts = self.pointers // itemsize

    def __getstate__(self) -> dict:
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prefix"])

    def __len__(self) -> int:
        """Number of sequences (= documents for files written by ``IndexedDatasetBuilder``)."""
        return int(self.sizes.size)

    def __getitem__(self, i: int) -> np.ndarray:
        """Tokens of sequence ``i`` as a read-only view into the memory map."""
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence {i} out of range for {n} sequences in {self.prefix}")
        start = int(self._starts[i])
        return self._tokens[start:start + int(self.sizes[i])]

    def num_tokens(self) -> int:
        """Total tokens over all sequences."""
        return int(self._tokens.size)

    def get_tokens(self, start: int, length: int) -> np.ndarray:
        """``length`` tokens from offset ``start`` of the flat stream (all sequences concatenated)."""
        start, length = int(start), int(length)
        if start < 0 or length < 0 or start + length > self.num_tokens():
            raise IndexError(f"tokens [{start}, {start + length}) outside [0, {self.num_tokens()}) "
                             f"in {self.prefix}")
        return self._tokens[start:start + length]
