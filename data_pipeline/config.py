"""The data-preparation config: YAML -> dataclasses, validated, with dotted overrides.

Same habits as ``llm/config.py``: an unknown key is an error naming the key, the file and the
closest valid key; a wrong type or value names the rule it breaks. Filter and dedup settings are
the filter classes' own dataclasses, so a threshold's default and its citation live in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_pipeline.decontaminate import DecontaminateConfig
from data_pipeline.dedup.minhash import MinHashConfig
from data_pipeline.dedup.substring import SubstringConfig
from data_pipeline.filters import C4Filter, FineWebFilter, GopherQualityFilter, GopherRepetitionFilter
from data_pipeline.normalize import NormalizeConfig
from data_pipeline.shards import ShardConfig
from data_pipeline.tokenize import TokenizeConfig


class DataConfigError(ValueError):
    """A config problem; the message names the file and key."""


@dataclass
class ReaderConfig:
    """How raw inputs are read."""

    format: str = "auto"
    """auto (from the path), jsonl (.jsonl/.gz/.zst), text (folder of .txt), parquet, hf (save_to_disk folder)."""
    text_field: str = "text"
    id_field: str = "id"
    on_error: str = "raise"
    """raise: stop at a malformed record naming file:line; skip: skip it and count it in the report."""


@dataclass
class FiltersConfig:
    """Quality filters, applied in this order; each has its paper's thresholds as defaults."""

    gopher_quality: GopherQualityFilter = field(default_factory=GopherQualityFilter)
    gopher_repetition: GopherRepetitionFilter = field(default_factory=GopherRepetitionFilter)
    c4: C4Filter = field(default_factory=C4Filter)
    fineweb: FineWebFilter = field(default_factory=FineWebFilter)

    def active(self) -> list:
        return [f for f in (self.gopher_quality, self.gopher_repetition, self.c4, self.fineweb) if f.enabled]


@dataclass
class ExactDedupConfig:
    enabled: bool = True
    num_buckets: int = 1
    """Split content hashes into this many files, bounding a dedup task's memory."""


@dataclass
class DedupConfig:
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    substring: SubstringConfig = field(default_factory=SubstringConfig)


@dataclass
class DataConfig:
    """One data-preparation job: inputs -> ``output`` (tokenizer.model, data.bin/.idx, report.json, dropped/)."""

    inputs: list[str] = field(default_factory=list)
    output: str = ""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    progress: bool = True
    """Show a progress bar per stage on stderr."""

    def validate(self, where: str = "config") -> None:
        if not self.inputs:
            raise DataConfigError(f"{where}: inputs is empty; pass --input FILE [FILE ...] or set inputs")
        if not self.output:
            raise DataConfigError(f"{where}: output is empty; pass --output DIR or set output")
        for p in self.inputs:
            if not Path(p).exists():
                raise DataConfigError(f"{where}: input {p} does not exist")
        if self.reader.on_error not in ("raise", "skip"):
            raise DataConfigError(f"{where}: reader.on_error={self.reader.on_error!r} must be 'raise' or 'skip'")
        if self.reader.format not in ("auto", "jsonl", "text", "parquet", "hf"):
            raise DataConfigError(f"{where}: reader.format={self.reader.format!r} must be one of "
                                  "auto, jsonl, text, parquet, hf")
        mh = self.dedup.minhash
        for key, value in (("dedup.minhash.bands", mh.bands), ("dedup.minhash.rows", mh.rows),
                           ("dedup.minhash.ngram", mh.ngram), ("dedup.minhash.num_buckets", mh.num_buckets),
                           ("dedup.exact.num_buckets", self.dedup.exact.num_buckets),
                           ("shards.docs_per_shard", self.shards.docs_per_shard),
                           ("dedup.substring.min_words", self.dedup.substring.min_words),
                           ("decontaminate.ngram", self.decontaminate.ngram)):
            if value < 1:
                raise DataConfigError(f"{where}: {key}={value} must be >= 1")
        if self.tokenize.tokenizer is not None and not Path(self.tokenize.tokenizer).is_file():
            raise DataConfigError(f"{where}: tokenize.tokenizer={self.tokenize.tokenizer} is not a file")


def _check_type(value, tp, key: str, where: str):
    """Coerce ``value`` to annotation ``tp`` or raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _check_type(value, next(a for a in args if a is not type(None)), key, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DataConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return _from_dict(tp, value, key, where)
    if origin is list:
        if not isinstance(value, list):
            raise DataConfigError(f"{where}: {key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DataConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_check_type(k, kt, key, where): _check_type(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise DataConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)  # dict keys such as n-gram sizes arrive as strings from YAML
            raise DataConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataConfigError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise DataConfigError(f"{where}: {key} must be a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls, data: dict, prefix: str, where: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
            raise DataConfigError(f"{where}: unknown key {key!r}{hint} (valid: {', '.join(names)})")
        kwargs[k] = _check_type(v, hints[k], key, where)
    return cls(**kwargs)


def apply_override(data: dict, override: str, where: str = "command line") -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the nested dict ``data``."""
    if "=" not in override:
        raise DataConfigError(f"{where}: override {override!r} must look like key.sub=value")
    key, raw = override.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise DataConfigError(f"{where}: {key} goes through a non-mapping value")
    node[parts[-1]] = yaml.safe_load(raw)


def load_data_config(path: str | Path | None = None, overrides: list[str] = (),
                     validate: bool = True) -> DataConfig:
    """Read ``path`` (YAML; None = all defaults), apply dotted ``overrides``, validate."""
    data: dict = {}
    where = str(path) if path else "defaults"
    if path:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise DataConfigError(f"{path}: top level must be a mapping")
        data = loaded or {}
    for o in overrides:
        apply_override(data, o)
    if overrides:
        where += " + overrides"
    cfg = _from_dict(DataConfig, data, "", where)
    if validate:
        cfg.validate(where)
    return cfg


def to_dict(cfg: DataConfig) -> dict:
    return dataclasses.asdict(cfg)
