"""The reader of the safetensors files that others write (Hugging Face directories), whose every error is one
ConfigError naming the file, and the tensor where there is one.

A corrupt file is a user's problem to fix, not a bug of ours: `safetensors_header` reads the 8-byte length and the
JSON header of a safetensors file itself (the format: github.com/huggingface/safetensors, "Format") and checks each
entry's dtype, shape and byte range against the file's size, so a truncated or hand-edited file is named before any
tensor is read. No torch at import: the configs' layer may use it.

The JSON and JSONL readers and the atomic writers live below, in typed_yaml/files.py, where data_pipeline can use
them too.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from typed_yaml import ConfigError
from typed_yaml.files import json_kind, unique_keys

# Bytes per element of each safetensors dtype (safetensors/src/tensor.rs `Dtype::size`).
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                           "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
# The Rust reader refuses headers past 100 MB (safetensors/src/tensor.rs MAX_HEADER_SIZE); so do we, before reading.
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: its dtype (safetensors' name, e.g. "BF16") and shape."""

    dtype: str
    shape: tuple[int, ...]


def safetensors_header(path: str | Path) -> dict[str, TensorEntry]:
    """{tensor name: TensorEntry} of safetensors file `path`, its header checked against the file: ConfigError naming
    the file (and the tensor) when it is empty, truncated, not safetensors, or an entry's bytes do not add up."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConfigError(f"{p}: not a safetensors file ({'empty' if size == 0 else f'only {size} bytes'})")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ConfigError(f"{p}: not a safetensors file, or truncated (its first 8 bytes announce a {n}-byte "
                                  f"header; the file has {size} bytes)")
            header_bytes = f.read(n)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such safetensors file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a safetensors file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=unique_keys)
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{p}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{p}: not a safetensors file (its header is {json_kind(header)}, not an object)")
    data_bytes = size - 8 - n
    entries, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(p, name, entry, data_bytes)
        spans.append((entry["data_offsets"][0], entry["data_offsets"][1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            what = "overlaps the one before it" if begin < end else f"starts at byte {begin} after a gap from {end}"
            raise ConfigError(f"{p}: tensor {name} {what} (a corrupt header)")
        end = stop
    if end != data_bytes:
        raise ConfigError(f"{p}: its header accounts for {end} bytes of tensor data but the file holds {data_bytes} "
                          "(truncated, or something appended)")
    return entries


def _entry(p: Path, name: str, entry, data_bytes: int) -> TensorEntry:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise ConfigError(f"{p}: tensor {name}: header entry is not {{dtype, shape, data_offsets}} (a corrupt header)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise ConfigError(f"{p}: tensor {name} has dtype {dtype!r}, which we cannot read "
                          f"(known: {', '.join(SAFETENSORS_DTYPE_BYTES)})")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ConfigError(f"{p}: tensor {name} has shape {shape!r} (a corrupt header)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ConfigError(f"{p}: tensor {name} has data_offsets {offsets!r} (a corrupt header)")
    numel = 1
    for d in shape:
        numel *= d
    if offsets[1] - offsets[0] != numel * SAFETENSORS_DTYPE_BYTES[dtype]:
        raise ConfigError(f"{p}: tensor {name} of shape {shape} {dtype} needs {numel * SAFETENSORS_DTYPE_BYTES[dtype]} "
                          f"bytes but its header gives it {offsets[1] - offsets[0]} (a corrupt header)")
    if offsets[1] > data_bytes:
        raise ConfigError(f"{p}: tensor {name} ends at byte {offsets[1]} of the data but the file holds {data_bytes} "
                          "(truncated)")
    return TensorEntry(dtype, tuple(shape))


def read_safetensors(path: str | Path, names=None):
    """Yield (name, tensor) of safetensors file `path` (all tensors, or those of `names`), checked by
    `safetensors_header` first; each tensor is read on its own (memory-mapped), so the caller holds one at a time."""
    from safetensors import SafetensorError, safe_open

    header = safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as st:
            for name in (header if names is None else names):
                yield name, st.get_tensor(name)
    except SafetensorError as e:
        raise ConfigError(f"{path}: cannot be read by safetensors ({str(e).splitlines()[0]})") from None
