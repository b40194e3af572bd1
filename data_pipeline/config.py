"""The data-preparation config: YAML -> dataclasses, validated, with dotted overrides.

Same habits as ``llm/config.py``: an unknown key is an error naming the key, the file and the
closest valid key; a wrong type or value names the rule it breaks. Filter and dedup settings are
the filter classes' own dataclasses, so a threshold's default and its citation live in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import typed_yaml
from typed_yaml import ConfigError
from data_pipeline.decontaminate import DecontaminateConfig
from data_pipeline.dedup.minhash import MinHashConfig
from data_pipeline.dedup.substring import SubstringConfig
from data_pipeline.filters import C4Filter, FineWebFilter, GopherQualityFilter, GopherRepetitionFilter
from data_pipeline.normalize import NormalizeConfig
from data_pipeline.shards import ShardConfig
from data_pipeline.hf_tokenizer import is_hf_tokenizer
from data_pipeline.tokenize import TokenizeConfig


class DataConfigError(ConfigError):
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
        if self.tokenize.tokenizer is not None and not (Path(self.tokenize.tokenizer).is_file()
                                                        or is_hf_tokenizer(self.tokenize.tokenizer)):
            raise DataConfigError(f"{where}: tokenize.tokenizer={self.tokenize.tokenizer} is not a file nor a "
                                  "directory with tokenizer.json")


def load_data_config(path: str | Path | None = None, overrides: list[str] = (),
                     validate: bool = True) -> DataConfig:
    """Read ``path`` (YAML; None = all defaults), apply dotted ``overrides``, validate."""
    where = str(path) if path else "defaults"
    try:
        data = typed_yaml.read_yaml(path) if path else {}
        typed_yaml.apply_overrides(data, overrides)
        if overrides:
            where += " + overrides"
        cfg = typed_yaml.from_dict(DataConfig, data, "", where)
    except DataConfigError:
        raise
    except ConfigError as e:
        raise DataConfigError(str(e)) from None
    if validate:
        cfg.validate(where)
    return cfg


def to_dict(cfg: DataConfig) -> dict:
    return dataclasses.asdict(cfg)
