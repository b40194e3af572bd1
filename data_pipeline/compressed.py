"""Raw lines of plain, gzip and zstd files, streaming; a truncated or corrupt stream raises.

Lines are bytes, not text, so that the reader can report (or skip) a line that is not UTF-8 by its
number instead of failing the whole file. Memory holds one decompressed chunk plus one line.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator


class StreamError(Exception):
    """The byte stream under the lines failed (truncated or corrupt compression, I/O error)."""


_READ_CHUNK = 1 << 20


def _zstd_chunks(f) -> Iterator[bytes]:
    """Decompressed chunks of every zstd frame in ``f``; a frame cut short raises EOFError
    (``stream_reader`` would just stop, silently dropping the rest of the file)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, in_frame = dctx.decompressobj(), False
    while data := f.read(_READ_CHUNK):
        while data:
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError as exc:
                raise StreamError(f"not valid zstd data ({exc})") from None
            in_frame = True
            if out:
                yield out
            data = b""
            if dobj.eof:  # a file may hold several frames (pzstd, concatenated files)
                data, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False
    if in_frame:
        raise EOFError


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buf = bytearray()
    for chunk in chunks:
        start, search = 0, len(buf)  # only the new bytes can hold a newline
        buf += chunk
        while (nl := buf.find(b"\n", search)) >= 0:
            yield bytes(buf[start:nl + 1])
            start = search = nl + 1
        del buf[:start]
    if buf:
        yield bytes(buf)


def byte_lines(path: Path) -> Iterator[bytes]:
    """The raw lines of a possibly compressed file, streaming. Bytes, not text, so that a line
    that is not UTF-8 can be reported (or skipped) by its number instead of ending the file."""
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                yield from f
        elif name.endswith(".zst"):
            with open(path, "rb") as f:
                yield from _split_lines(_zstd_chunks(f))
        else:
            with open(path, "rb") as f:
                yield from f
    except EOFError:
        raise StreamError("compressed data ends early (truncated file?)") from None
    except (OSError, zlib.error) as exc:
        raise StreamError(str(exc)) from None
