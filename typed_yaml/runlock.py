"""One writer per directory: an exclusive lock on a run, checkpoint, sweep or data-output directory, held for the
life of the process that writes it.

The lock is flock(2) on a file in the directory (`LOCK_FILE`). The kernel drops a flock when the last descriptor of
its open file goes away, so a holder that dies in any way (kill -9 included) leaves nothing locked: there is no
stale lock to time out. The file records its holder (pid, host, command, start time): a refusal names who holds
the directory, and whoever takes a file that a dead holder left behind says so. A holder that releases removes the
file while it still holds the lock; a taker checks that the file it locked is still the one at the path, since a
flock on a file unlinked meanwhile would lock nothing.

Where the filesystem has no flock (Lustre mounted without `-o flock` answers ENOSYS), the lock is skipped with one
warning rather than refusing to run. NFS (v4, or v3 with lockd) implements flock with byte-range locks across
clients, so two nodes see each other's locks.

At the bottom of the layers (next to the config loader) because every layer that writes a directory takes one:
data_pipeline's output folder, llm/train's run directory, the sweep and the Hugging Face conversions.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from typed_yaml import ConfigError
from typed_yaml.disk import DiskFull, disk_full_as

LOCK_FILE = ".lock"
"""Name of the lock file inside a locked directory (hidden: listings and "is it empty" checks skip it)."""
_UNSUPPORTED = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}
_held: dict[str, "Lock"] = {}  # lock-file path -> the lock this process holds on it


class LockHeld(ConfigError):
    """Another live process holds the lock; the message names it and is meant to be printed as is."""


def to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def describe(record: dict | None) -> str:
    """'pid 123 on host h (python launch/pretrain.py ...), since T' from a lock file's record."""
    if not record:
        return "another process (its lock file names no holder)"
    cmd = record.get("command", "?")
    cmd = cmd if len(cmd) <= 120 else cmd[:117] + "..."
    return f"pid {record.get('pid')} on host {record.get('host')} ({cmd}), since {record.get('started')}"


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace").strip()
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class Lock:
    """An exclusive lock on one lock file, held until `release()` or the end of the process."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd  # fd None: the filesystem has no flock, nothing is held

    def holds(self) -> bool:
        """Whether the lock is held and its file is still the one at its path (a test may delete the directory)."""
        if self.fd is None:
            return True
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except OSError:
            return False

    def release(self) -> None:
        """Remove the lock file (while holding it, so no one locks a file about to vanish) and drop the lock."""
        _held.pop(str(self.path), None)
        if self.fd is None:
            return
        if self.holds():
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def acquire(path: str | Path, what: str, log: Callable[[str], None] = to_stderr) -> Lock:
    """Take the exclusive lock on lock file `path` (created with its parents) for `what` (e.g. "out_dir runs/x",
    named in messages). Taking a lock this process already holds returns it.

    Raises LockHeld naming the holder when another live process holds it, ConfigError when the file cannot be
    created. Says so through `log` when it takes over a file a dead holder left (that holder's record is in it).
    """
    path = Path(path).absolute()
    mine = _held.get(str(path))
    if mine is not None and mine.holds():
        return mine
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what}: cannot create {path.parent} ({e.strerror or e})") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError(f"{what}: cannot create its lock file {path} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _read(fd)
                os.close(fd)
                raise LockHeld(f"{what} is in use by {describe(holder)}: one process writes it at a time; wait for "
                               "that one to finish or stop it") from None
            os.close(fd)
            if e.errno in _UNSUPPORTED:
                log(f"warning: {what}: cannot lock {path} ({e.strerror}; a filesystem without flock): nothing stops "
                    "a second process from writing it at the same time")
                lock = _held[str(path)] = Lock(path, None)
                return lock
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder released and removed the file between our open and our flock: take the new one
    previous = _read(fd)
    if previous and previous.get("pid") != os.getpid():
        log(f"{what}: taking over the lock left by {describe(previous)}, which is no longer running")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        with disk_full_as(path, f"the lock record of {what}"):  # a full disk: one line, not an OSError traceback
            os.write(fd, (json.dumps(_record()) + "\n").encode())
    except DiskFull:
        os.close(fd)
        raise
    lock = _held[str(path)] = Lock(path, fd)
    return lock


def lock_dir(directory: str | Path, what: str, log: Callable[[str], None] = to_stderr) -> Lock:
    """`acquire` the lock of directory `directory` (its LOCK_FILE), creating the directory."""
    return acquire(Path(directory) / LOCK_FILE, what, log)


def holder(path: str | Path) -> dict | None:
    """The record of the live process holding lock file `path`, or None when no one holds it (this process
    included: a lock of ours is reported as free)."""
    path = Path(path).absolute()
    if str(path) in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return _read(fd) or {}
        return None
    finally:
        os.close(fd)  # closing drops the probe's shared lock too
    return None


def release(path: str | Path) -> None:
    """Release this process's lock on lock file `path`, if it holds one."""
    lock = _held.get(str(Path(path).absolute()))
    if lock is not None:
        lock.release()


def release_all() -> None:
    """Release every lock this process holds (a clean end: no lock file is left for the next run to take over)."""
    for lock in list(_held.values()):
        lock.release()
