"""Streaming document readers: jsonl(.gz/.zst), plain-text folders, parquet, Hugging Face datasets.

Contract: every reader is a generator of :class:`Document` that holds at most one batch (parquet,
HF) or one line (jsonl, text) in memory, so memory stays bounded whatever the corpus size.
Malformed input raises :class:`ReaderError` naming the file and the line (or row), unless the
caller passes ``on_error="skip"``, in which case the record is skipped and counted in
``ReadStats.skipped`` (with the first few messages kept for the report).
Nothing here downloads: Hugging Face inputs are local data files or a ``save_to_disk`` folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from data_pipeline.compressed import StreamError, byte_lines
from data_pipeline.errors import DataError

_SURROGATE = re.compile("[\ud800-\udfff]")


class ReaderError(DataError):
    """A malformed record or an unreadable input; the message starts with ``path:line`` (or
    ``path:row N``, or ``path`` alone when the whole file is unreadable)."""


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


def _check_unicode(value: str, what: str, where: str) -> None:
    # json.loads accepts "\ud800" escapes; such a string cannot be written back as UTF-8.
    bad = _SURROGATE.search(value)
    if bad:
        raise ReaderError(f"{where}: {what} holds an unpaired UTF-16 surrogate "
                          f"(\\u{ord(bad.group()):04x}), which is not valid Unicode")


def _record_to_doc(rec: object, where: str, index: int, text_field: str, id_field: str) -> Document:
    if not isinstance(rec, dict):
        raise ReaderError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if text_field not in rec:
        raise ReaderError(f"{where}: field {text_field!r} missing (keys: {sorted(rec)[:8]}); "
                          "set reader.text_field")
    text = rec[text_field]
    if not isinstance(text, str):
        kind = "null" if text is None else type(text).__name__
        raise ReaderError(f"{where}: field {text_field!r} is {kind}, not a string")
    _check_unicode(text, f"field {text_field!r}", where)
    raw_id = rec.get(id_field)
    # A missing id falls back to file:line so every dropped/ record can still be traced.
    doc_id = str(raw_id) if raw_id is not None else where
    _check_unicode(doc_id, f"field {id_field!r}", where)
    return Document(doc_id, text, index)


def read_jsonl(path: str | Path, text_field: str = "text", id_field: str = "id",
               on_error: str = "raise", stats: ReadStats | None = None) -> Iterator[Document]:
    """One JSON object per line; blank lines are ignored (not counted as documents). A UTF-8
    byte-order mark on the first line is allowed. A line that is not UTF-8 or not a JSON object
    with a string ``text_field`` is malformed (raised or skipped, see the module docstring); a
    truncated or corrupt compressed file always raises, naming its last complete line."""
    p, stats = Path(path), stats if stats is not None else ReadStats()
    index = lineno = 0
    lines = byte_lines(p)
    while True:
        try:
            raw = next(lines, None)
        except StreamError as exc:
            last = f"the last complete line is {lineno}" if lineno else "no complete line was read"
            raise ReaderError(f"{p}: {exc}; {last}") from None
        if raw is None:
            return
        lineno += 1
        where = f"{p}:{lineno}"
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            line, msg = None, f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        if line is not None:
            if not line.strip():
                continue
            try:
                doc = _record_to_doc(json.loads(line), where, index, text_field, id_field)
                msg = None
            except json.JSONDecodeError as exc:
                msg = f"{where}: invalid JSON ({exc.msg}); a .jsonl file holds one JSON object per line"
            except ReaderError as exc:
                msg = exc.args[0]
        if msg is not None:
            if on_error == "skip":
                stats.skip(msg)
                index += 1  # keep positions stable so ids of later lines do not shift
                continue
            raise ReaderError(msg)
        stats.read += 1
        index += 1
        yield doc


def _not_utf8(path: Path) -> str:
    """``path:line: not UTF-8 ...`` for a file that failed to decode (read_text decodes in
    chunks, so its exception's offsets are not the file's)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column})"
    raise AssertionError(f"{path} decodes as UTF-8")


def read_text_folder(path: str | Path, on_error: str = "raise",
                     stats: ReadStats | None = None, pattern: str = "**/*.txt") -> Iterator[Document]:
    """Each ``*.txt`` file (recursively, sorted for determinism) is one document whose id is its
    path relative to the folder. A single .txt file is one document."""
    p, stats = Path(path), stats if stats is not None else ReadStats()
    files = [p] if p.is_file() else sorted(q for q in p.glob(pattern) if q.is_file())
    for index, f in enumerate(files):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            msg = _not_utf8(f)
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
            raise ReaderError(f"{source}: no column {text_field!r} (columns: {sorted(batch)}); "
                              "set reader.text_field")
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

    import pyarrow as pa

    stats = stats if stats is not None else ReadStats()
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(f"{path}: not a readable parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ReaderError(f"{path}: no column {text_field!r} (columns: {names}); set reader.text_field")
    cols = [c for c in (text_field, id_field) if c in names]

    def batches() -> Iterator[dict]:
        it = pf.iter_batches(batch_size=batch_size, columns=cols)
        while True:
            try:
                batch = next(it, None)
            except (pa.ArrowException, OSError) as exc:
                raise ReaderError(f"{path}: corrupt parquet data after {stats.read + stats.skipped} rows "
                                  f"({exc})") from None
            if batch is None:
                return
            yield batch.to_pydict()

    yield from _read_batches(batches(), str(path), text_field, id_field, on_error, stats)


def read_hf(path: str | Path, text_field: str = "text", id_field: str = "id",
            on_error: str = "raise", stats: ReadStats | None = None,
            split: str = "train", batch_size: int = 1024) -> Iterator[Document]:
    """A local ``save_to_disk`` folder (memory-mapped Arrow, so bounded memory), taking
    ``split`` when it is a DatasetDict. Local json/parquet files go through the readers above,
    which stream the same data without the ``datasets`` cache."""
    import datasets

    stats = stats if stats is not None else ReadStats()
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise ReaderError(f"{path}: not a readable datasets save_to_disk folder ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ReaderError(f"{path}: no split {split!r} (splits: {sorted(ds)})")
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
