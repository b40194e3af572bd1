"""Checkpoint directories: naming, atomic publication, discovery of the latest complete one, retention.

A checkpoint is a directory `step_XXXXXXXX/` under `checkpoint.dir`. It is written under a temporary name
and renamed into place only when every file is on disk, so a run killed mid-save never leaves a directory
that looks complete; `trainer_state.json` is also the last file written, and discovery requires it.
What goes inside (model/optimizer files) is the backend's business (local torch.save or DeepSpeed's); beside them
every step directory carries config.yaml and its own copy of the run's tokenizer (`save_tokenizer`), so one step
directory, moved or copied alone, is all that export, evaluation, alignment and resume need.
"""
from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from llm.train import safe_load
from typed_yaml import log
from typed_yaml.disk import DiskFull, disk_full_as, disk_full_message
from typed_yaml.files import atomic_write_text

_STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "trainer_state.json"


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def temp_dir_for(final: Path) -> Path:
    """Same name on every rank, so all ranks of a parallel job write their shards into one place."""
    return final.parent / f".tmp-{final.name}"


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written temporary checkpoint directory visible under its final name."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The highest-step complete checkpoint under root, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    best = None
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return None if best is None else best[1]


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Every complete checkpoint under root (trainer_state.json present), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()), reverse=True)


def unreadable(ckpt: Path) -> str | None:
    """Why checkpoint directory `ckpt` cannot be resumed from, or None: trainer_state.json, the RNG states and
    config.yaml must parse, model.pt must exist and every *.pt be a whole zip archive (a truncated torch.save file
    has lost its zip directory, at the end). Reads only directories and small files: seconds for any size."""
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{STATE_FILE} is not readable JSON ({type(e).__name__}: {e})"
    if not isinstance(state, dict) or not all(isinstance(state.get(k), int) for k in ("step", "tokens")):
        return f"{STATE_FILE} lacks an integer step and tokens"
    if not (ckpt / "model.pt").is_file():
        return "model.pt is missing"
    for f in sorted(ckpt.rglob("*.pt")):
        try:
            with zipfile.ZipFile(f) as z:
                z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            return f"{f.relative_to(ckpt)} is truncated or corrupt (not a whole torch.save archive: {e})"
    for f in sorted(ckpt.glob("rng_rank*.json")):
        try:
            json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"{f.name} is not readable JSON ({type(e).__name__})"
    if (ckpt / "config.yaml").is_file():
        import typed_yaml
        try:
            typed_yaml.read_yaml(ckpt / "config.yaml")
        except typed_yaml.ConfigError as e:
            return f"config.yaml cannot be read ({str(e).split(': ', 1)[-1]})"
    return None


def resume_point(root: str | Path) -> Path | None:
    """The checkpoint a resume starts from: the newest complete one that is readable (`unreadable`), or None when
    there is none at all.

    A newest checkpoint that turns out unreadable (a truncated model.pt after a crash of the storage, a hand-edited
    trainer_state.json) is skipped for the previous complete one, with a warning (on the main rank) naming the bad one
    and why, rather than refused: checkpoint.keep >= 2 exists for exactly this, the steps since the previous one are
    retrained on the same samples (the data position is the step number), and the bad directory is left as it is
    until the save of its step replaces it. ConfigError when no complete checkpoint is readable: there is nothing
    to fall back to, and starting from scratch over a damaged run must be the user's choice."""
    from llm.config import ConfigError
    skipped = []
    for p in complete_checkpoints(root):
        why = unreadable(p)
        if why is None:
            if skipped:
                log.warning("; ".join(f"checkpoint {b} cannot be resumed from: {w}" for b, w in skipped) +
                            f"; resuming from {p}, the newest readable one (the bad one is left as it is, replaced "
                            "when its step is saved again)")
            return p
        skipped.append((p, why))
    if skipped:
        bad, why = skipped[0]
        raise ConfigError(f"checkpoint {bad} cannot be resumed from: {why}; no earlier complete checkpoint is "
                          f"readable: restore it from a copy, delete {Path(root)} to start the run over, or start a "
                          "new run with checkpoint.resume=false (and a new checkpoint.dir)")
    return None


def prune(root: str | Path, keep: int) -> None:
    """Delete all but the `keep` most recent complete checkpoints, and stale temporary directories."""
    root = Path(root)
    done = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file())
    for p in done[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    # A save killed before publish() leaves its temporary directory; the step it was for is either published
    # since (a later save of the same step) or lost, so nothing in it is ever read again.
    for p in root.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)


def save_tokenizer(ckpt: Path, tokenizer: str | None, root: str | Path | None = None) -> Path | None:
    """Copy the run's tokenizer (data.tokenizer) into step directory `ckpt` and return the copy: tokenizer.model, or
    tokenizer.json with its tokenizer_config.json (data_pipeline/hf_tokenizer.py `copy_tokenizer`, the layout that
    alignment stage directories and launch/import_hf.py use too). Readers prefer this copy to the path
    config.yaml names, which is relative to wherever the run was launched and breaks when the data moves
    (llm/hf/export.py `step_tokenizer`). None without data.tokenizer (pre-tokenized data): nothing to copy.

    A copy in every step rather than one in checkpoint.dir referenced by content hash: a step directory is what
    users move, copy alone and pass to export, evaluation and checkpoint.init_from, and prune() deletes whole
    directories with nothing shared to keep track of; a tokenizer is kilobytes to a few MB beside model.pt.

    If data.tokenizer is gone since start-up (moved with the data mid-run; the datasets stay memory-mapped, so
    training goes on), the copy in the latest checkpoint under `root` is carried on; ConfigError when there is none.
    """
    from data_pipeline.hf_tokenizer import copy_tokenizer, tokenizer_file
    from llm.config import ConfigError
    if tokenizer is None:
        return None
    src = Path(tokenizer)
    if not src.is_file():
        previous = latest_checkpoint(root) if root is not None else None
        if previous is None or not tokenizer_file(previous).is_file():
            raise ConfigError(f"data.tokenizer={tokenizer} is gone (moved or deleted since the run started) and no "
                              f"earlier checkpoint holds a copy to carry on: put it back and rerun the command")
        src = tokenizer_file(previous)
    return copy_tokenizer(src, ckpt)


def disk_full_guard(tmp: Path, step: int, root: str | Path):
    """Around the writing of step `step`'s checkpoint into `tmp`: a write that fails for lack of space becomes a
    DiskFull (one line naming the file, exit 2) after `tmp` is deleted, so no directory of that step is published
    and the latest complete checkpoint stays what a rerun resumes from. DeepSpeed's own torch.save reports a full
    disk as RuntimeError 'enforce fail at inline_container.cc' (typed_yaml/disk.py tells the two apart)."""
    latest = latest_checkpoint(root)
    return disk_full_as(tmp, f"the checkpoint of step {step}", remove=tmp,
                        then=f"nothing was marked complete (latest complete checkpoint: {latest or 'none'}); free "
                             f"space under {root} and rerun the same command to resume")


def shard_write_failed(exc: BaseException | None, tmp: Path, step: int, root: str | Path, first: int, rank: int,
                       is_main: bool) -> BaseException:
    """The exception every rank raises once the ranks agreed that rank `first` (the lowest) failed to write its part
    of step `step`'s checkpoint into `tmp` (this rank's own error `exc`, or None). The main rank deletes `tmp` only
    now, after every rank stopped writing: deleting it under a rank still writing its shard turned one full disk
    into a second rank's "parent directory does not exist" traceback. The first failing rank announces its line,
    the others are quiet."""
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    what = f"the checkpoint of step {step}"
    message = disk_full_message(exc, tmp, what) if exc is not None else None
    latest = latest_checkpoint(root)
    then = (f"nothing was marked complete (latest complete checkpoint: {latest or 'none'}); free space under {root} "
            "and rerun the same command to resume")
    if message is None:
        message = f"{tmp}: rank {first} could not write its part of {what}"
    return DiskFull(f"{message}; {then}", announce=rank == first)


def write_state(path: Path, state: dict) -> None:
    atomic_write_text(path, json.dumps(state, indent=1))


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


def rng_to_text(state: torch.Tensor) -> str:
    """A generator's state (a uint8 tensor) as base64 text, for JSON."""
    return base64.b64encode(state.numpy().tobytes()).decode()


def rng_from_text(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict:
    """Every RNG this process draws from, as JSON-serialisable values (a JSON file cannot carry code)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "torch": rng_to_text(torch.get_rng_state())}
    if torch.cuda.is_available():
        state["cuda"] = [rng_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng_from_text(state["torch"]) if isinstance(state["torch"], str) else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_from_text(s) if isinstance(s, str) else s for s in state["cuda"]])


def save_rng_state(ckpt: Path, rank: int) -> None:
    (ckpt / f"rng_rank{rank}.json").write_text(json.dumps(rng_state()))


def load_rng_state(ckpt: Path, rank: int) -> bool:
    """Restore this rank's RNG state from a checkpoint; False when it holds none for this rank."""
    f = ckpt / f"rng_rank{rank}.json"
    if f.is_file():
        set_rng_state(json.loads(f.read_text()))
        return True
    legacy = ckpt / f"rng_rank{rank}.pt"  # checkpoints written before the state moved to JSON
    if legacy.is_file():
        old = safe_load.load(legacy)
        old["python"] = list(old["python"])
        old["numpy"] = list(old["numpy"])
        set_rng_state(old)
        return True
    return False


def read_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The consolidated single-process weights (`model.pt`, llm/model.py names) of a checkpoint directory saved
    under any layout, of a model.pt file itself, or of a Hugging Face model directory (config.json + safetensors,
    llm/hf/load.py). Raises ConfigError when there is none."""
    from llm.config import ConfigError
    p = Path(path)
    if (p / "config.json").is_file() and not (p / "model.pt").is_file():
        from llm.hf.load import read_hf_weights
        return read_hf_weights(p)
    f = p / "model.pt" if p.is_dir() else p
    if not f.is_file():
        raise ConfigError(f"{path}: no model.pt (give a step_XXXXXXXX checkpoint directory or a model.pt file)")
    return safe_load.load(f)


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load read_model_weights(path) into a single-process model; ConfigError if the shapes differ."""
    from llm.config import ConfigError
    try:
        model.load_state_dict(read_model_weights(path))
    except RuntimeError as e:
        raise ConfigError(f"{path} does not fit this model (another shape?): "
                          f"{str(e).splitlines()[-1].strip()}") from None
