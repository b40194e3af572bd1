"""Streaming document readers: jsonl(.gz/.zst), plain-text folders, parquet, Hugging Face datasets.

Contract: every reader is a generator of :class:`Document` that holds at most one batch (parquet,
HF) or one line (jsonl, text) in memory, so memory stays bounded whatever the corpus size.
Malformed input raises :class:`ReaderError` naming the file and the line (or row), unless the
caller passes ``on_error="skip"``, in which case the record is skipped and counted in
``ReadStats.skipped`` (with the first few messages kept for the report).
Nothing here downloads: Hugging Face inputs are local data files or a ``save_to_disk`` folder.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


class ReaderError(ValueError):
    """A malformed record; the message starts with ``path:line``."""


@dataclass(frozen=True)
class Document:
    """One raw document. ``index`` is its 0-based position in its file, which with the file's
    position in the input list gives a stable identity independent of sharding."""

    id: str
    text: str
    index: int


@dataclass
class ReadStats:
    """Counters a reader fills while it streams."""

    read: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    """Messages of skipped records not yet collected by the consumer (who drains it)."""

    def skip(self, message: str) -> None:
        self.skipped += 1
        self.errors.append(message)


def detect_format(path: str | Path) -> str:
    """Guess the reader from the path: a folder is ``text`` (or ``hf`` if it holds a
    ``dataset_info.json`` from ``save_to_disk``); otherwise by suffix."""
    p = Path(path)
    if p.is_dir():
        return "hf" if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() else "text"
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".txt"):
        return "text"
    raise ReaderError(f"{path}: cannot tell the format from the name; set reader.format")


def _open_text(path: Path) -> io.TextIOBase:
    """Open a possibly compressed file as UTF-8 text, streaming (no full decompression)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        import zstandard  # optional dependency, needed only for .zst inputs

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return io.TextIOWrapper(raw, encoding="utf-8")
    return open(path, encoding="utf-8")


def _record_to_doc(rec: object, where: str, index: int, text_field: str, id_field: str) -> Document:
    if not isinstance(rec, dict):
        raise ReaderError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    text = rec.get(text_field)
    if not isinstance(text, str):
        raise ReaderError(f"{where}: field {text_field!r} missing or not a string (keys: {sorted(rec)[:8]})")
    raw_id = rec.get(id_field)
    # A missing id falls back to file:line so every dropped/ record can still be traced.
    doc_id = str(raw_id) if raw_id is not None else where
    return Document(doc_id, text, index)


def read_jsonl(path: str | Path, text_field: str = "text", id_field: str = "id",
               on_error: str = "raise", stats: ReadStats | None = None) -> Iterator[Document]:
    """One JSON object per line; blank lines are ignored (not counted as documents)."""
    p, stats = Path(path), stats if stats is not None else ReadStats()
    index = 0
    with _open_text(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                doc = _record_to_doc(json.loads(line), where, index, text_field, id_field)
            except (json.JSONDecodeError, ReaderError) as exc:
                msg = exc.args[0] if isinstance(exc, ReaderError) else f"{where}: invalid JSON ({exc.msg})"
                if on_error == "skip":
                    stats.skip(msg)
                    index += 1  # keep positions stable so ids of later lines do not shift
                    continue
                raise ReaderError(msg) from None
            stats.read += 1
            index += 1
            yield doc


def read_text_folder(path: str | Path, on_error: str = "raise",
                     stats: ReadStats | None = None, pattern: str = "**/*.txt") -> Iterator[Document]:
    """Each ``*.txt`` file (recursively, sorted for determinism) is one document whose id is its
    path relative to the folder. A single .txt file is one document."""
    p, stats = Path(path), stats if stats is not None else ReadStats()
    files = [p] if p.is_file() else sorted(q for q in p.glob(pattern) if q.is_file())
    for index, f in enumerate(files):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            msg = f"{f}:1: not UTF-8 ({exc.reason} at byte {exc.start})"
            if on_error == "skip":
                stats.skip(msg)
                continue
            raise ReaderError(msg) from None
        stats.read += 1
        yield Document(str(f.relative_to(p)) if f != p else f.name, text, index)


def _read_batches(batches: Iterator[dict], source: str, text_field: str, id_field: str,
                  on_error: str, stats: ReadStats) -> Iterator[Document]:
    index = 0
    for batch in batches:
        texts = batch.get(text_field)
        if texts is None:
            raise ReaderError(f"{source}: no column {text_field!r} (columns: {sorted(batch)})")
        ids = batch.get(id_field)
        for k, text in enumerate(texts):
            where = f"{source}:row {index}"
            if not isinstance(text, str):
                if on_error == "skip":
                    stats.skip(f"{where}: {text_field!r} is not a string")
                    index += 1
                    continue
                raise ReaderError(f"{where}: {text_field!r} is not a string")
            doc_id = str(ids[k]) if ids is not None and ids[k] is not None else where
            stats.read += 1
            yield Document(doc_id, text, index)
            index += 1


def read_parquet(path: str | Path, text_field: str = "text", id_field: str = "id",
                 on_error: str = "raise", stats: ReadStats | None = None,
                 batch_size: int = 1024) -> Iterator[Document]:
    """Row batches of ``batch_size`` via pyarrow, reading only the two needed columns."""
    import pyarrow.parquet as pq

    stats = stats if stats is not None else ReadStats()
    pf = pq.ParquetFile(path)
    cols = [c for c in (text_field, id_field) if c in pf.schema_arrow.names]
    batches = (b.to_pydict() for b in pf.iter_batches(batch_size=batch_size, columns=cols))
    yield from _read_batches(batches, str(path), text_field, id_field, on_error, stats)


def read_hf(path: str | Path, text_field: str = "text", id_field: str = "id",
            on_error: str = "raise", stats: ReadStats | None = None,
            split: str = "train", batch_size: int = 1024) -> Iterator[Document]:
    """A local ``save_to_disk`` folder (memory-mapped Arrow, so bounded memory), taking
    ``split`` when it is a DatasetDict. Local json/parquet files go through the readers above,
    which stream the same data without the ``datasets`` cache."""
    import datasets

    stats = stats if stats is not None else ReadStats()
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    cols = [c for c in (text_field, id_field) if c in ds.column_names]
    if text_field not in cols:
        raise ReaderError(f"{path}: no column {text_field!r} (columns: {ds.column_names})")
    batches = (ds.select_columns(cols)[i:i + batch_size] for i in range(0, len(ds), batch_size))
    yield from _read_batches(batches, str(path), text_field, id_field, on_error, stats)


def read_documents(path: str | Path, fmt: str = "auto", text_field: str = "text", id_field: str = "id",
                   on_error: str = "raise", stats: ReadStats | None = None) -> Iterator[Document]:
    """Dispatch on ``fmt`` (``auto`` guesses with :func:`detect_format`)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        return read_jsonl(path, text_field, id_field, on_error, stats)
    if fmt == "text":
        return read_text_folder(path, on_error, stats)
    if fmt == "parquet":
        return read_parquet(path, text_field, id_field, on_error, stats)
    if fmt == "hf":
        return read_hf(path, text_field, id_field, on_error, stats)
    raise ValueError(f"unknown reader format {fmt!r}; expected auto, jsonl, text, parquet or hf")
