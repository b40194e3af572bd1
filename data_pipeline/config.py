"""The data-preparation config: YAML -> dataclasses, validated, with dotted overrides.

Same habits as ``llm/config/``: an unknown key is an error naming the key, the file and the
closest valid key; a wrong type or value names the rule it breaks. Filter and dedup settings are
the filter classes' own dataclasses, so a threshold's default and its citation live in one place.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import typed_yaml
from typed_yaml import ConfigError
from data_pipeline.canaries import CanaryConfig
from data_pipeline.decontaminate import DecontaminateConfig
from data_pipeline.errors import DataError
from data_pipeline.dedup.minhash import MinHashConfig
from data_pipeline.dedup.substring import SubstringConfig
from data_pipeline.filters import C4Filter, FineWebFilter, GopherQualityFilter, GopherRepetitionFilter
from data_pipeline.normalize import NormalizeConfig
from data_pipeline.readers import ReaderError, detect_format
from data_pipeline.shards import ShardConfig
from data_pipeline.hf_tokenizer import is_hf_tokenizer, load_tokenizer
from data_pipeline.encode import TokenizeConfig
from data_pipeline.tokenizer import MIN_VOCAB_SIZE

MODEL_TYPES = ("bpe", "unigram", "char", "word")  # SentencePiece's trainer_spec model types


class DataConfigError(ConfigError, DataError):
    """A config problem; the message names the file and key."""

    label = DataError.label  # "error:", as every data-preparation mistake is printed


@dataclass
class ReaderConfig:
    """How raw inputs are read."""

    format: str = "auto"
    """auto (from the path), jsonl (.jsonl/.gz/.zst), text (folder of .txt), parquet, hf (save_to_disk folder)."""
    text_field: str = "text"
    """Field of a record (JSONL, parquet, hf) holding the document's text; a record without it is malformed."""
    id_field: str = "id"
    """Field naming a document in dropped/ and the report; a record without it is named by its file:line."""
    on_error: str = "raise"
    """raise: stop at a malformed record naming file:line; skip: skip it and count it in the report."""


@dataclass
class FiltersConfig:
    """Quality filters, applied in this order; each has its paper's thresholds as defaults."""

    gopher_quality: GopherQualityFilter = field(default_factory=GopherQualityFilter)
    """Gopher's quality rules (Rae et al. 2021, App. A.1.1): length, word length, symbols, bullets, stop words."""
    gopher_repetition: GopherRepetitionFilter = field(default_factory=GopherRepetitionFilter)
    """Gopher's repetition rules (Table A1): repeated lines, paragraphs and n-grams."""
    c4: C4Filter = field(default_factory=C4Filter)
    """C4's rules (Raffel et al. 2020, Sec. 2.2); the only filter that edits text (it removes lines)."""
    fineweb: FineWebFilter = field(default_factory=FineWebFilter)
    """FineWeb's extra rules (Penedo et al. 2024, Sec. 3.4): line punctuation, duplicate and short lines."""

    def active(self) -> list:
        return [f for f in (self.gopher_quality, self.gopher_repetition, self.c4, self.fineweb) if f.enabled]


@dataclass
class ExactDedupConfig:
    """Exact deduplication by a hash of the lower-cased, whitespace-collapsed text (data_pipeline/dedup/exact.py)."""

    enabled: bool = True
    """Keep one document of each group with the same content hash: the one whose id hashes lowest, so the kept
    copy does not depend on the order of the inputs."""
    num_buckets: int = 1
    """Split content hashes into this many files, bounding a dedup task's memory."""


@dataclass
class DedupConfig:
    """The three deduplication methods: exact and MinHash drop whole documents (the cluster stage), substring
    edits the kept ones."""

    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    """Whole-document duplicates (on by default: cheap, and it drops only copies)."""
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    """Near-duplicates by MinHash LSH over word 5-grams (FineWeb's settings)."""
    substring: SubstringConfig = field(default_factory=SubstringConfig)
    """Repeated spans inside documents, cut out (off by default)."""


@dataclass
class PrepareConfig:
    """One data-preparation job (launch/prepare_data.py): inputs -> ``output`` (tokenizer.model, data.bin/.idx,
    report.json, dropped/). Not llm.config.DataConfig, the run's `data` section that reads such an output."""

    inputs: list[str] = field(default_factory=list)
    """Raw input files or folders (--input), each given once and none inside another; the reader's format decides
    what a folder means."""
    output: str = ""
    """Folder the prepared dataset is written to (--output); new, empty, or one this pipeline wrote (a re-run
    resumes from its work/ markers). Never inside an input nor holding one."""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    """How raw inputs are read into documents."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Text normalisation, first of the stages: filters and dedup see its output."""
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    """Quality filters, after normalisation; each dropped document is logged in dropped/ with its reason."""
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    """Drop training documents that overlap evaluation sets (none given: off)."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Exact, near-duplicate and substring deduplication."""
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    """The tokenizer (given, or trained on the kept documents) and the encoding into data.bin/.idx."""
    shards: ShardConfig = field(default_factory=ShardConfig)
    """How the work is cut into shards and spread over tasks (SLURM arrays, torchrun)."""
    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    """Planted canaries for the memorization audit (launch/audit.py); off by default."""
    progress: bool = True
    """Show a progress bar per stage on stderr."""

    def validate(self, where: str = "config") -> None:
        """Raise DataConfigError (naming ``where`` and the key) for any setting or path that
        cannot work; only cheap checks (no input is read beyond its name, size and folder listing)."""
        if not self.inputs:
            raise DataConfigError(f"{where}: inputs is empty; pass --input FILE [FILE ...] or set inputs")
        if not self.output:
            raise DataConfigError(f"{where}: output is empty; pass --output DIR or set output")
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
                           ("decontaminate.ngram", self.decontaminate.ngram),
                           ("tokenize.batch_docs", self.tokenize.batch_docs),
                           ("tokenize.train_docs", self.tokenize.train_docs),
                           ("tokenize.train_max_sentences", self.tokenize.train_max_sentences)):
            if value < 1:
                raise DataConfigError(f"{where}: {key}={value} must be >= 1")
        if not 0.0 < mh.jaccard_threshold <= 1.0:
            raise DataConfigError(f"{where}: dedup.minhash.jaccard_threshold={mh.jaccard_threshold} must be in (0, 1]")
        _check_tokenize(self.tokenize, where)
        _check_shards(self.shards, where)
        _check_canaries(self.canaries, where)
        for name in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
            _check_thresholds(getattr(self.filters, name), f"filters.{name}", where)
        _check_paths(self, where)


def _check_tokenize(tok: TokenizeConfig, where: str) -> None:
    if tok.workers < 0:
        raise DataConfigError(f"{where}: tokenize.workers={tok.workers} must be >= 0 (0 or 1: no worker processes)")
    if tok.model_type not in MODEL_TYPES:
        raise DataConfigError(f"{where}: tokenize.model_type={tok.model_type!r} must be one of "
                              f"{', '.join(MODEL_TYPES)}")
    if tok.tokenizer is None:
        if tok.vocab_size < MIN_VOCAB_SIZE:
            raise DataConfigError(f"{where}: tokenize.vocab_size={tok.vocab_size} must be >= {MIN_VOCAB_SIZE} "
                                  "(4 special pieces + 256 byte-fallback pieces + at least one character)")
        return
    if not (Path(tok.tokenizer).is_file() or is_hf_tokenizer(tok.tokenizer)):
        raise DataConfigError(f"{where}: tokenize.tokenizer={tok.tokenizer} is not a file nor a directory with "
                              "tokenizer.json")
    try:
        model = load_tokenizer(tok.tokenizer)
    except ValueError:
        raise DataConfigError(f"{where}: tokenize.tokenizer={tok.tokenizer} is not a SentencePiece model, nor "
                              "a Hugging Face tokenizer") from None
    if model.eos_id < 0:
        raise DataConfigError(f"{where}: tokenize.tokenizer={tok.tokenizer} has no EOS piece, "
                              "which ends every document in the .bin")


def _check_shards(sh: ShardConfig, where: str) -> None:
    if sh.task_count is not None and sh.task_count < 1:
        raise DataConfigError(f"{where}: shards.task_count={sh.task_count} must be >= 1")
    count = sh.task_count or 1
    if sh.task_index is not None and not 0 <= sh.task_index < count:
        raise DataConfigError(f"{where}: shards.task_index={sh.task_index} must be in [0, shards.task_count={count})")


def _check_canaries(c: CanaryConfig, where: str) -> None:
    if not c.enabled:
        return
    for key, value, low in (("per_bucket", c.per_bucket, 1), ("length", c.length, 2),
                            ("secret_digits", c.secret_digits, 1)):
        if value < low:
            raise DataConfigError(f"{where}: canaries.{key}={value} must be >= {low}")
    if not c.repeats or any(r < 1 for r in c.repeats) or len(set(c.repeats)) != len(c.repeats):
        raise DataConfigError(f"{where}: canaries.repeats={c.repeats} must be distinct counts >= 1")
    if not 0.0 < c.max_position <= 1.0:
        raise DataConfigError(f"{where}: canaries.max_position={c.max_position} must be in (0, 1]")


def _check_thresholds(flt, key: str, where: str) -> None:
    """Every numeric threshold >= 0; a minimum fraction or ratio <= 1 (above it every document
    would be dropped); a minimum no larger than its maximum."""
    values = {}
    for f in dataclasses.fields(flt):
        value = getattr(flt, f.name)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for n, v in items:
            name = f"{key}.{f.name}" + (f".{n}" if n is not None else "")
            if n is not None and int(n) < 1:
                raise DataConfigError(f"{where}: {key}.{f.name} has n-gram size {n}; sizes must be >= 1")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if v < 0:
                raise DataConfigError(f"{where}: {name}={v} must be >= 0")
            if f.name.startswith("min_") and ("ratio" in f.name or "frac" in f.name) and v > 1:
                raise DataConfigError(f"{where}: {name}={v} is a fraction and must be <= 1")
        values[f.name] = value
    for low, high in (("min_words", "max_words"), ("min_mean_word_length", "max_mean_word_length")):
        if low in values and values[low] > values[high]:
            raise DataConfigError(f"{where}: {key}.{low}={values[low]} is above {key}.{high}={values[high]}")


def _check_paths(cfg: PrepareConfig, where: str) -> None:
    """Inputs exist, are readable by a known reader, are not empty and are given once; the
    output is a folder (or will be one) outside every input and holding no one else's files."""
    out = Path(cfg.output).resolve()
    if out.exists() and not out.is_dir():
        raise DataConfigError(f"{where}: output {cfg.output} is a file; pass a folder (it is created if missing)")
    parent = next(q for q in out.parents if q.exists())
    if not out.exists() and not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise DataConfigError(f"{where}: output {cfg.output} cannot be created: {parent} is "
                              f"{'not writable' if parent.is_dir() else 'a file'}")
    # Every prepared folder has work/ (prepared_dir.PreparedDir) from its first moment; a non-empty folder
    # without one holds someone else's files, which a re-run would mix with ours.
    if out.is_dir() and any(out.iterdir()) and not (out / "work").is_dir():
        raise DataConfigError(f"{where}: output {cfg.output} is a non-empty folder that was not prepared "
                              "by this pipeline; pass a new or empty folder")
    seen: dict[Path, str] = {}
    for p in cfg.inputs:
        _check_input(p, cfg.reader.format, f"{where}: input", where)
        real = Path(p).resolve()
        if real in seen:
            raise DataConfigError(f"{where}: input {p} is given twice (as {seen[real]} too); "
                                  "its documents would all count as duplicates")
        for other, name in seen.items():
            if other in real.parents or real in other.parents:
                inner, outer = (p, name) if other in real.parents else (name, p)
                raise DataConfigError(f"{where}: input {inner} is inside input folder {outer}; "
                                      "its documents would be read twice")
        seen[real] = p
        if real == out or real in out.parents:
            raise DataConfigError(f"{where}: output {cfg.output} is inside input {p}; put it elsewhere "
                                  "(the pipeline would read its own output on a re-run)")
        if out in real.parents:
            raise DataConfigError(f"{where}: input {p} is inside output {cfg.output}; put it elsewhere")
    for p in cfg.decontaminate.eval_paths:
        _check_input(p, "auto", f"{where}: decontaminate.eval_paths entry", where)


def _check_input(p: str, fmt: str, what: str, where: str) -> None:
    path = Path(p)
    if not path.exists():
        raise DataConfigError(f"{what} {p} does not exist")
    try:
        fmt = detect_format(path) if fmt == "auto" else fmt
    except ReaderError as exc:
        raise DataConfigError(f"{where}: {exc}") from None
    if path.is_file() and path.stat().st_size == 0:
        raise DataConfigError(f"{what} {p} is an empty file")
    if fmt == "text" and path.is_dir() and next((q for q in path.glob("**/*.txt") if q.is_file()), None) is None:
        raise DataConfigError(f"{what} {p} is a folder with no .txt file (a folder input is read as one "
                              "document per .txt file, recursively)")
    if fmt != "text" and fmt != "hf" and path.is_dir():
        raise DataConfigError(f"{what} {p} is a folder, but reader.format={fmt} reads a file")


def load_data_config(path: str | Path | None = None, overrides: list[str] = (),
                     validate: bool = True) -> PrepareConfig:
    """Read ``path`` (YAML; None = all defaults), apply dotted ``overrides``, validate."""
    where = str(path) if path else "defaults"
    try:
        data = typed_yaml.read_yaml(path) if path else {}
        typed_yaml.apply_overrides(data, overrides)
        if overrides:
            where += " + overrides"
        cfg = typed_yaml.from_dict(PrepareConfig, data, "", where)
    except DataConfigError:
        raise
    except ConfigError as e:
        raise DataConfigError(str(e)) from None
    if validate:
        cfg.validate(where)
    return cfg


def to_dict(cfg: PrepareConfig) -> dict:
    return dataclasses.asdict(cfg)
