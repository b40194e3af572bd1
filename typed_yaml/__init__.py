"""YAML ↔ typed dataclasses, shared by every config of the project (run, data, alignment).

Builds nested dataclasses from plain dicts by their type hints, coercing only what YAML gets wrong (1e9
read as a string, integral floats for int fields, int dict keys read as strings) and raising `ConfigError`
with the source, the dotted key and the rule for anything else; unknown keys name the closest valid one. A key
that was renamed still loads under its old name, with a one-line note (`Renamed`, a config class's `RENAMED`).
The raw mapping comes from typed_yaml/strict_yaml.py (`read_yaml`, `apply_overrides`, re-exported here).
No torch here.

A package of its own, below both `llm/` and `data_pipeline/`: the data configs and the run configs share this
one loader, and `llm/` reads prepared data through `data_pipeline/`, so a loader inside either would make the
two import each other.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typed_yaml.errors import ConfigError  # the error contract: typed_yaml/errors.py
from typed_yaml.strict_yaml import AliasBombError, DuplicateKeyError, StrictLoader, apply_overrides, read_yaml

__all__ = ["AliasBombError", "ConfigError", "DuplicateKeyError", "Renamed", "StrictLoader", "apply_overrides",
           "build_validated", "coerce", "from_dict", "load", "read_yaml", "rename_keys"]


def _optional_inner(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return None


def _number(value, kind, key, source):
    if isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads 1e9 (no dot) as a string
        except ValueError:
            raise ConfigError(f"{source}: {key} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):  # .inf/.nan parse as floats and would pass every range check silently
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """`value` as type `tp` (a dataclass, list[...], dict[...], optional, or scalar), or ConfigError naming `key`."""
    inner = _optional_inner(tp)
    if value is None:
        if tp is Any or inner is not None:
            return None
        raise ConfigError(f"{source}: {key} may not be null")
    if inner is not None:
        tp = inner
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        shorthand = getattr(tp, "SHORTHAND", None)
        if shorthand and not isinstance(value, dict):
            value = {shorthand: value}  # e.g. `precision: bf16` for {dtype: bf16}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single path/weight is a one-element list
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__}")
        return [coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
        kt, vt = typing.get_args(tp)
        return {coerce(k, kt, key, source): coerce(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        return _number(value, tp, key, source)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            hint = (" (YAML reads an unquoted off/on/no/yes/true/false as a boolean: quote it, or use null for none)"
                    if isinstance(value, bool) else "")
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}{hint}")
        return str(value)
    return value


@dataclass(frozen=True)
class Renamed:
    """A config key that moved: `old` still loads, as `new`, with a one-line note. Both are dotted paths relative to
    the config class whose `RENAMED` table lists it (e.g. RunConfig: "parallel.checkpoint_every_k"), so a key may
    also move to another section."""

    old: str
    """The dotted path configs used to write, e.g. "parallel.checkpoint_every_k"."""
    new: str
    """The dotted path it loads as; a config giving both is refused."""
    since: str
    """When the rename landed (a date, or the version that made it), so a reader can tell how old a config is."""


def _pop(raw: dict, dotted: str) -> Any:
    """Remove the value at `dotted` (which `_has` found) and return it."""
    *parents, last = dotted.split(".")
    node = raw
    for p in parents:
        node = node[p]
    return node.pop(last)


def _has(raw: dict, dotted: str) -> bool:
    node = raw
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


def rename_keys(raw: dict, renamed, source: str = "<dict>", prefix: str = "") -> tuple[dict, list[str]]:
    """`raw` with every old key of `renamed` (Renamed entries) moved to its new path, and one line per key moved
    saying so; `raw` itself is left as it was. ConfigError, naming both keys, when a config sets both."""
    used = [r for r in renamed if _has(raw, r.old)]
    if not used:
        return raw, []
    raw, notes = copy.deepcopy(raw), []
    at = f"{prefix}." if prefix else ""
    for r in used:
        if _has(raw, r.new):
            raise ConfigError(f"{source}: {at}{r.old} and {at}{r.new} are both set: {at}{r.old} is the old name of "
                              f"{at}{r.new} (renamed {r.since}); keep only {at}{r.new}")
        value = _pop(raw, r.old)
        *parents, last = r.new.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # e.g. a section given as a scalar: from_dict names the mistake
                raise ConfigError(f"{source}: cannot move {at}{r.old} to {at}{r.new}: '{p}' is not a section")
        node[last] = value
        notes.append(f"{source}: {at}{r.old} was renamed {at}{r.new} ({r.since}); it still loads under the old "
                     f"name, but write {at}{r.new}")
    return raw, notes


def from_dict(cls, raw: dict, prefix: str = "", source: str = "<dict>"):
    """Build dataclass `cls` from `raw`; unknown keys raise ConfigError naming the closest valid key.

    A class with a `RENAMED` table (Renamed entries) accepts the old keys, as the new ones; the instance built
    then carries the notes saying so in `renamed_keys` (a tuple of lines, for the caller to print once)."""
    renamed = getattr(cls, "RENAMED", ())
    notes: list[str] = []
    if renamed:
        raw, notes = rename_keys(raw, renamed, source, prefix)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?" if close else \
                f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
        kwargs[k] = coerce(v, hints[k], key, source)
    obj = cls(**kwargs)
    if renamed:
        object.__setattr__(obj, "renamed_keys", tuple(notes))  # object's: works on a frozen dataclass too
    return obj


def build_validated(cls, raw: dict, source: str = "<dict>"):
    """from_dict, then the config's own `validate()`; every ConfigError names `source`."""
    cfg = from_dict(cls, raw or {}, "", source)
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def load(cls, path: str | Path | None, overrides=(), shorthands: dict[str, str] = {}):
    """A validated `cls` from a YAML file (None: all defaults) with dotted overrides applied.
    Raises ConfigError, naming the file (and the command line when overrides are given), on any user mistake."""
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source += " (with command-line overrides)"
    return build_validated(cls, apply_overrides(raw, list(overrides), shorthands=shorthands), source)
