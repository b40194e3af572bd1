"""An output directory that one command writes whole (an exported Hugging Face model, an imported checkpoint): never
one of the command's inputs, and replaced (--force) only by a complete new output, only where the old one is that
command's own.

    with staged_output(out, "export_hf.py", inputs=[("checkpoint", src)], force=force) as tmp:
        write everything into tmp
    # here out is the new output; had the block raised, out would be untouched and tmp gone

The rules, in order:
  * the output may not be, contain or lie inside an input (symlinks resolved): `--force` would delete the input, or
    the output would be written into it;
  * one writer: a lock on `.NAME.lock` beside the output (typed_yaml/runlock.py; beside, as the output itself is
    swapped whole), so two commands writing one output are refused, naming the first;
  * an existing non-empty output is replaced only with force, and only when its marker (`MARKER`) says this command
    wrote it and it holds nothing else the marker does not list (a training run started in an imported checkpoint's
    folder is the user's, not ours);
  * the new output is written to `.NAME.partial` beside it, its marker last, then swapped in by two renames: the old
    output moves to `.NAME.old`, the new one to NAME, and the old one is deleted. A run killed at any point leaves
    either the old output or the new one at NAME (or, between the two renames, the old one at .NAME.old, which the
    next run puts back); a partial directory left by a killed run is removed by the next one, which holds the lock.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from typed_yaml import ConfigError
from typed_yaml.runlock import to_stderr, acquire

MARKER = ".llm-forge-output.json"
"""The file that says which command wrote an output directory, and what it wrote there."""


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_not_an_input(out: Path, inputs: list[tuple[str, Path]], flag: str = "OUT_DIR") -> None:
    """ConfigError when output `out` is, contains or lies inside one of `inputs` ((name, path) pairs)."""
    o = _real(out)
    for name, path in inputs:
        i = _real(path)
        if o == i:
            raise ConfigError(f"{flag} {out} is the {name} {path}: the output would replace its own input; "
                              "give another output path")
        if o in i.parents:
            raise ConfigError(f"{flag} {out} contains the {name} {path}: replacing it would delete the input; "
                              "give an output path outside it")
        if i in o.parents:
            raise ConfigError(f"{flag} {out} lies inside the {name} {path}: the output would be written into its "
                              "input; give an output path outside it")


def read_marker(out: Path) -> dict | None:
    try:
        record = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _check_replaceable(out: Path, command: str, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise ConfigError(f"{out} exists and is not a directory: remove it yourself or give another output directory "
                          f"({command} replaces only a directory it wrote)")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    if not force:
        raise ConfigError(f"{out} exists and is not empty (pass --force to replace an earlier output of {command})")
    marker = read_marker(out)
    if marker is None or marker.get("command") != command:
        raise ConfigError(f"{out} is not an output of {command} (no {MARKER} naming it): --force replaces only what "
                          f"{command} wrote; remove it yourself or give another output path")
    extra = sorted(entries - set(marker.get("entries", ())) - {MARKER})
    if extra:
        raise ConfigError(f"{out} holds {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}, which {command} "
                          "did not write: --force would delete it; move it out or give another output path")


def _recover(out: Path, partial: Path, old: Path, log: Callable[[str], None]) -> None:
    """Clean up after a run killed mid-way (we hold the lock: no one else is writing these)."""
    if old.exists():
        if out.exists():
            shutil.rmtree(old)  # killed after the swap, while deleting the replaced output
        else:
            os.replace(old, out)  # killed between the two renames: put the previous output back
            log(f"{out}: restored the previous output from {old.name} (an earlier run was stopped while replacing it)")
    if partial.exists():
        log(f"{out}: removing {partial.name}, the unfinished output of an earlier run that was stopped")
        shutil.rmtree(partial)


@contextmanager
def staged_output(out: str | Path, command: str, inputs: list[tuple[str, Path]] = (), force: bool = False,
                  source: str | None = None, log: Callable[[str], None] = to_stderr) -> Iterator[Path]:
    """Yield an empty directory to write output `out` into; on leaving the block without an exception, it becomes
    `out` (see the module docstring). `command` names the writer in the marker and in messages; `source` is
    recorded in the marker. Raises ConfigError (before anything is written) for an output that is an input, is
    written by another live process, or exists and may not be replaced; LockHeld naming that process."""
    given, out = out, Path(os.path.abspath(out))  # "." and "a/.." name their directory, as the swap needs
    check_not_an_input(out, list(inputs))
    if not out.name:
        raise ConfigError(f"{given}: the root directory cannot be an output; give a directory below it")
    parent = out.parent
    partial, old = parent / f".{out.name}.partial", parent / f".{out.name}.old"
    check_not_an_input(partial, list(inputs))
    lock = acquire(parent / f".{out.name}.lock", f"output {out}", log)
    try:
        _recover(out, partial, old, log)
        _check_replaceable(out, command, force)
        try:
            partial.mkdir(parents=True)
        except OSError as e:
            raise ConfigError(f"cannot create {partial} ({e.strerror or e}) to write {out} in") from None
        try:
            yield partial
            marker = {"command": command, "source": source, "entries": sorted(p.name for p in partial.iterdir()),
                      "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (partial / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if out.exists():
            os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        lock.release()
