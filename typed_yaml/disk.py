"""A full disk, a quota or a file-size limit at a write site: one line naming the path and what was being written.

Every layer writes files (checkpoints and metrics in llm/train, shards in data_pipeline), so this sits with
ConfigError at the bottom of the import graph. A write that fails for lack of space is the environment's fault,
not a bug: the caller removes what it half wrote, marks nothing complete, and the entry point prints the line.

How the failure arrives:
  * Python's own writes: OSError with errno ENOSPC (disk full), EDQUOT (quota) or EFBIG (past RLIMIT_FSIZE,
    `ulimit -f`, once SIGXFSZ is ignored);
  * torch.save to an open file object: RuntimeError "[enforce fail at inline_container.cc] ... unexpected pos" whose
    __context__ is that OSError;
  * torch.save to a path (DeepSpeed's checkpoint engine): the same RuntimeError with only "basic_ios::clear:
    iostream error" behind it, no errno. It is called disk full only when the filesystem has less than
    NEARLY_FULL_BYTES left (or a file-size limit is set); anything else stays a bug with its traceback.
No torch here.
"""
from __future__ import annotations

import errno
import os
import resource
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from typed_yaml import ConfigError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
TORCH_WRITER_FAILURES = ("enforce fail at inline_container", "PytorchStreamWriter failed", "file write failed",
                         "basic_ios::clear")
"""Texts of the RuntimeError torch's zip writer (caffe2/serialize/inline_container.cc) raises on a failed write."""
NEARLY_FULL_BYTES = 64 << 20
"""Free bytes under which a torch writer failure without an errno is taken for a full disk: less than a small
checkpoint shard."""


class DiskFull(ConfigError):
    """A write failed for lack of space (or quota, or a file-size limit); the message names the path and what.

    `announce`: under a launcher, whether this rank prints it (None: the node's first rank does, as for any
    ConfigError; a collective write sets it so that exactly one rank, the first that failed, prints its line)."""

    label = "error"

    def __init__(self, message: str, announce: bool | None = None):
        super().__init__(message)
        self.announce = announce


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to an unprivileged writer on the filesystem holding `path` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _size_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def disk_full_reason(exc: BaseException, path: str | Path) -> str | None:
    """Why writing under `path` failed, if for lack of space ("No space left on device", ...), else None."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            if e.errno == errno.EFBIG and _size_limit() is not None:
                return f"file too large (the file-size limit, ulimit -f, is {_size_limit():,} bytes)"
            return os.strerror(e.errno)
    if any(isinstance(e, RuntimeError) and any(t in str(e) for t in TORCH_WRITER_FAILURES) for e in chain):
        free = free_bytes(path)
        if free is not None and free < NEARLY_FULL_BYTES:
            return f"No space left on device ({free:,} bytes free)"
        if _size_limit() is not None:
            return f"file too large (the file-size limit, ulimit -f, is {_size_limit():,} bytes)"
    return None


def disk_full_message(exc: BaseException, path: str | Path, what: str) -> str | None:
    """One line for a write of `what` under `path` that failed for lack of space, or None for any other failure."""
    reason = disk_full_reason(exc, path)
    if reason is None:
        return None
    filename = next((e.filename for e in _chain(exc) if isinstance(e, OSError) and e.filename), None)
    return f"{filename or path}: {reason} while writing {what}"


@contextmanager
def disk_full_as(path: str | Path, what: str, error: type[Exception] = DiskFull, remove: str | Path | None = None,
                 then: str = ""):
    """Turn a write failure for lack of space inside the block into `error` (one line naming `path` and `what`,
    then `then`), after deleting `remove` (the half-written file or folder) to give the space back. Any other
    exception passes through untouched."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        message = disk_full_message(e, path, what)
        if message is None:
            raise
        if remove is not None:
            r = Path(remove)
            shutil.rmtree(r, ignore_errors=True) if r.is_dir() else r.unlink(missing_ok=True)
        raise error(message + (f"; {then}" if then else "")) from None
