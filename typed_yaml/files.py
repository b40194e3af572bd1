"""The bottom layer's file helpers: readers of JSON and JSONL files whose every error is one ConfigError naming the
file (and the line, or the key), and writers that leave a file whole or absent whenever their writer is killed.

A corrupt file is a user's problem to fix, not a bug of ours: `read_json` refuses an empty, truncated or non-UTF-8
file, a repeated key (json keeps the last one without a word) and a top level of the wrong kind; `read_jsonl` reads
one JSON value per line (strictly, naming file:line, or leniently, for a file a running writer may be appending to).

The writers put the new content in a temporary file in the same folder (one per process, so concurrent writers do not
share one), flush it to disk, then os.replace it onto the target (atomic within a filesystem, POSIX rename(2)): a
reader, or a rerun after a kill (even a power cut), finds the old file or the new one, never a part. The temporary
file is removed if the write fails. `atomic_path` yields the temporary path for writers that want a path or their
own file object (torch.save, np.save); `atomic_write_text` and `atomic_write_bytes` are the common cases.

Everything above may use these (data_pipeline included, which imports nothing of ours but typed_yaml). No torch.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from typed_yaml.errors import ConfigError


def unique_keys(pairs):
    """A json object_pairs_hook that refuses a repeated key (json.loads keeps the last one without a word)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def json_kind(value) -> str:
    """How a message names the kind of a JSON value: "an object", "a list", "a string", ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def read_json(path: str | Path, kind: type = dict, what: str = "JSON file"):
    """The parsed content of JSON file `path`, whose top level must be a `kind` (dict or list). ConfigError naming
    the file (and the line and column, or the repeated key) when it is missing, unreadable, empty or malformed."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a {what}")
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such {what}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a {what} (not UTF-8 text at byte {e.start})") from None
    if not text.strip():
        raise ConfigError(f"{p}: empty (expected a {what})")
    try:
        raw = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except ValueError as e:
        raise ConfigError(f"{p}: {e}") from None
    if not isinstance(raw, kind):
        want = "an object ({...})" if kind is dict else "a list ([...])"
        raise ConfigError(f"{p}: the top level must be {want}, not {json_kind(raw)}")
    return raw


def read_jsonl(path: str | Path, strict: bool = True, kind: type = dict, what: str = "JSONL file",
               row: str = "a row") -> Iterator:
    """Yield the values of JSONL file `path` (one JSON value per line, split on b"\\n" only), in file order; blank
    lines are skipped. Each must be a `kind` (dict or list); `what` and `row` name the file and a line in messages.

    strict (the default): ConfigError naming the file when it cannot be read or is not UTF-8, and file:line when a
    line is not JSON or not a `kind`. Lenient (for a file a running writer may be appending to): a missing or
    unreadable file has no values, undecodable bytes are replaced, and a line that is not a `kind` of JSON (one torn
    mid-write) is skipped. Lines are read one at a time: a large file is never held whole."""
    p = Path(path)
    try:
        f = open(p, "rb")
    except OSError as e:
        if strict:
            raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
        return
    with f:
        offset = 0
        for n, raw in enumerate(_lines(f, p, strict), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if strict:
                    raise ConfigError(f"{p}: not a {what} (not UTF-8 text at byte {offset + e.start})") from None
                line = raw.decode("utf-8", errors="replace")
            offset += len(raw)
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                if strict:
                    raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
                continue
            if isinstance(value, kind):
                yield value
            elif strict:
                want = "a JSON object" if kind is dict else "a JSON list"  # kind=object accepts any value
                raise ConfigError(f"{p}:{n}: {row} is {want}, not {type(value).__name__}")


def _lines(f, p: Path, strict: bool) -> Iterator[bytes]:
    try:
        yield from f
    except OSError as e:
        if strict:
            raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None


def temp_path_for(path: str | Path) -> Path:
    """The temporary file the atomic writers use for `path`: hidden, in the same folder, one per process."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path` for the caller to write; when the block ends without an exception the
    file is flushed to disk (fsync, unless told not to) and replaces `path` atomically. On any exception (a kill by
    SIGTERM included, once it is raised) the temporary file is removed and `path` is left as it was."""
    p = Path(path)
    tmp = temp_path_for(p)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
