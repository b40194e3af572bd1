"""Checkpoint files are data, never code.

A `torch.save` file is a pickle, and a pickle may name any importable callable to be called on load
(`os.system`, say): loading a checkpoint directory someone else wrote would run whatever they hid in it.
torch's weights-only unpickler rebuilds only tensors, numbers, strings, containers and the types allow-listed
by name, so every file this project reads goes through it:

- our own files through `load` (an audit, then `torch.load(weights_only=True)`);
- the files DeepSpeed reads for us (its engine, its universal-checkpoint converter) call `torch.load` with a
  hard-coded `weights_only=False` in about thirty places. `audit_tree` reads every pickle of a checkpoint
  directory before DeepSpeed opens it (torch.serialization.get_unsafe_globals_in_checkpoint disassembles the
  pickle without executing it), and `force_weights_only` sets TORCH_FORCE_WEIGHTS_ONLY_LOAD, which makes torch
  ignore `weights_only=False` for the rest of the process and its children: a file that slipped past the
  audit still cannot run code.

A refused file is a `CheckpointRefused` (a ConfigError: entry points print one line naming the file and exit 2).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from llm.config import ConfigError


class CheckpointRefused(ConfigError):
    """A checkpoint file that would run code when loaded, or that is not a readable torch.save archive."""


def allow(*types) -> None:
    """Allow-list classes or functions (by their import path) for every weights-only load of this process."""
    torch.serialization.add_safe_globals(list(types))


def _allow_numpy_rng_state() -> None:
    # np.random.get_state() holds a uint32 array: checkpoints written before the RNG state moved to JSON pickled it.
    import numpy as np
    reconstruct = getattr(getattr(np, "_core", np.core), "multiarray")._reconstruct
    allow(np.ndarray, np.dtype, reconstruct, type(np.dtype("uint32")))


def force_weights_only() -> None:
    """Make every later torch.load in this process (and the processes it starts) use the weights-only
    unpickler, whatever `weights_only` its caller passes (torch.serialization reads the variable on each load)."""
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # torch refuses to load when both are set


def audit(path: str | Path) -> None:
    """Raise CheckpointRefused unless `path` is a torch.save archive whose pickle names only allow-listed globals."""
    path = Path(path)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except FileNotFoundError:
        raise
    except (ValueError, RuntimeError, KeyError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointRefused(f"refusing to load {path}: not a readable torch.save archive "
                                f"({type(e).__name__}: {str(e).split('. ')[0] if str(e) else 'truncated'})") from None
    if unsafe:
        raise CheckpointRefused(f"refusing to load {path}: its pickle calls {', '.join(sorted(unsafe))} on load, which "
                                "could run any code (a checkpoint holds only tensors, numbers, strings and "
                                "containers); if you trust whoever wrote it, convert it to plain tensors yourself")


def pickle_files(root: str | Path) -> list[Path]:
    """Every *.pt file under root, through symlinked folders too (Path.rglob does not enter them, but DeepSpeed
    opens the files inside by their path through the link); each real folder is walked once, so a link cycle ends."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".pt")]
    return found


def audit_tree(root: str | Path) -> None:
    """audit() every *.pt file under root (a checkpoint directory, DeepSpeed's shards included, symlinked folders
    followed); a *.pt that is a dangling symlink is refused too."""
    for f in pickle_files(root):
        if not f.exists():
            raise CheckpointRefused(f"refusing to load {f}: a symlink to {os.readlink(f)}, which does not exist")
        audit(f)


def load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False):
    """torch.load of a file we did not necessarily write: audited, then the weights-only unpickler (memory-mapped
    with `mmap`: the tensors stay in the file until touched)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointRefused(f"refusing to load {path}: a directory, not a torch.save file")
    audit(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointRefused(f"refusing to load {path}: {str(e).splitlines()[0]}") from None


_allow_numpy_rng_state()
