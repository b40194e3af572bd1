"""What every stage did: counts in/out, drops per reason, and the progress bar it shows.

report.json is deterministic (no timings, no absolute paths), so a resumed run reproduces it
byte for byte. "words" are whitespace-separated words, the unit the text stages see; "tokens"
are tokenizer tokens (including the appended EOD), counted only from the tokenize stage on.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from data_pipeline.errors import DataError
from data_pipeline.filters.drop import Drop
from typed_yaml.files import read_jsonl

SNIPPET_CHARS = 240
"""Characters of a dropped document's text kept in its ``dropped/*.jsonl`` row."""

STAGES = ("read", "normalize", "filter", "decontaminate", "exact_dedup", "minhash_dedup",
          "substring_dedup", "tokenize")


@dataclass
class StageStats:
    """Counts for one stage; ``merge`` adds another unit's counts."""

    docs_in: int = 0
    docs_out: int = 0
    words_in: int = 0
    words_out: int = 0
    tokens_out: int = 0
    dropped: Counter = field(default_factory=Counter)

    def record(self, words_in: int, words_out: int, reason: str | None) -> None:
        self.docs_in += 1
        self.words_in += words_in
        if reason is None:
            self.docs_out += 1
            self.words_out += words_out
        else:
            self.dropped[reason] += 1

    def merge(self, other: "StageStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.words_in += other.words_in
        self.words_out += other.words_out
        self.tokens_out += other.tokens_out
        self.dropped.update(other.dropped)

    def to_dict(self) -> dict:
        d = {"docs_in": self.docs_in, "docs_out": self.docs_out, "words_in": self.words_in,
             "words_out": self.words_out, "dropped": dict(sorted(self.dropped.items()))}
        if self.tokens_out:
            d["tokens_out"] = self.tokens_out
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StageStats":
        return cls(d["docs_in"], d["docs_out"], d["words_in"], d["words_out"],
                   d.get("tokens_out", 0), Counter(d["dropped"]))


def merge_stage_dicts(dicts: list[dict]) -> dict[str, StageStats]:
    """Sum ``{stage: StageStats dict}`` mappings from many units."""
    out: dict[str, StageStats] = {}
    for d in dicts:
        for stage, s in d.items():
            out.setdefault(stage, StageStats()).merge(StageStats.from_dict(s))
    return out


def ordered(stages: dict[str, StageStats]) -> dict[str, dict]:
    return {s: stages[s].to_dict() for s in STAGES if s in stages}


def progress(desc: str, total: int | None, enabled: bool, unit: str = "doc"):
    """A tqdm bar on stderr for one stage; a no-op object when disabled or tqdm is missing.
    Off when stderr is not a terminal (disable=None): in a log file the bar is only noise."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, leave=False,
                        dynamic_ncols=True, disable=None)
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def snippet(text: str, chars: int = SNIPPET_CHARS) -> str:
    """The start of ``text`` with whitespace runs collapsed, cut at ``chars`` (marked by an ellipsis)."""
    flat = " ".join(text[:chars * 4].split())
    return flat if len(flat) <= chars else flat[:chars - 1] + "…"


def drop_row(doc_id: str, reason: str, source: str | None = None, index: int | None = None,
             text: str | None = None, **evidence) -> dict:
    """One ``dropped/*.jsonl`` row: the document (id, input file, 0-based record index, snippet), the
    reason, then what the rule measured (``value``, ``drop_if``, ``threshold``; ``duplicate_of`` and
    its Jaccard for dedup; ``eval_id`` for decontamination). Every writer of dropped/ goes through here."""
    row = {"id": doc_id, "reason": reason}
    if source is not None:
        row["source"], row["index"] = source, index
    if text is not None:
        row["snippet"] = snippet(text)
    row.update(evidence)
    return row


def read_drops(root, rule: str | None = None) -> Iterator[dict]:
    """The rows of ``root/dropped/*.jsonl`` (files in name order), those whose reason is ``rule`` or
    starts with ``rule.`` when given (``minhash_dedup`` or ``minhash_dedup.near_duplicate``).
    Raises DataError when ``root`` has no dropped/ folder."""
    folder = Path(root) / "dropped"
    if not folder.is_dir():
        raise DataError(f"{root} has no dropped/ folder; pass a folder written by prepare_data.py --output")
    for path in sorted(folder.glob("*.jsonl")):
        for row in read_jsonl(path, what="drop record file", row="a drop record"):
            if rule is None or row["reason"] == rule or row["reason"].startswith(rule + "."):
                yield row


def below_threshold(row: dict) -> bool:
    """A drop whose own evidence does not meet its bar: an unverified near duplicate whose estimated
    Jaccard to the document it names is under the LSH midpoint (a chance match or a chain)."""
    if row.get("value") is None or "drop_if" not in row:
        return False
    return not Drop(row["reason"], row["value"], row["drop_if"], row["threshold"]).holds()


def format_drop(row: dict) -> str:
    """A dropped row for the terminal: reason and evidence, source, then the snippet."""
    head = f"{row['reason']}  {row['id']}"
    if "value" in row:
        head += f"  {row['value']} {row['drop_if']} {row['threshold']}"
        if below_threshold(row):
            head += "  (NOT MET)"
    if "duplicate_of" in row:
        head += f"  duplicate_of={row['duplicate_of']}"
        for key in ("jaccard", "exact_jaccard"):
            if key in row:
                head += f" {key}={row[key]}"
    if "eval_id" in row:
        head += f"  eval_id={row['eval_id']}"
    lines = [head]
    if row.get("source") is not None:
        lines.append(f"  {row['source']}" + (f" #{row['index']}" if row.get("index") is not None else ""))
    if row.get("error"):
        lines.append(f"  {row['error']}")
    if row.get("snippet"):
        lines.append(f"  | {row['snippet']}")
    return "\n".join(lines)


def kept_snippets(root, ids: set[str]) -> dict[str, str]:
    """id -> snippet of the requested documents that passed the filters (``work/ingest/*.ids.jsonl``),
    to show a near duplicate beside the document it names."""
    found: dict[str, str] = {}
    for path in sorted((Path(root) / "work" / "ingest").glob("*.ids.jsonl")):
        for row in read_jsonl(path, kind=list, what="ids file", row="an ids row"):
            if row[1] in ids and len(row) > 3:
                found[row[1]] = row[3]
    return found


def inspect_drops(root, rule: str | None = None, limit: int = 20, not_met: bool = False) -> str:
    """Counts of ``root``'s drops per reason (with how many do not meet their own threshold), then up
    to ``limit`` rows with their evidence, source and snippet, near duplicates beside the kept text."""
    rows = [r for r in read_drops(root, rule) if not not_met or below_threshold(r)]
    counts = Counter(r["reason"] for r in rows)
    unmet = Counter(r["reason"] for r in rows if below_threshold(r))
    lines = [f"{len(rows)} dropped" + (f" by {rule}" if rule else "") + (" (threshold not met)" if not_met else "")]
    for reason, n in counts.most_common():
        note = f"   {unmet[reason]} not meeting their threshold" if unmet[reason] else ""
        lines.append(f"  {reason:<40}{n:>7}{note}")
    shown = rows[:limit]
    kept = kept_snippets(root, {r["duplicate_of"] for r in shown if "duplicate_of" in r})
    for r in shown:
        lines.append("")
        lines.append(format_drop(r))
        if r.get("duplicate_of") in kept:
            lines.append(f"  kept {r['duplicate_of']}: | {kept[r['duplicate_of']]}")
    if len(rows) > limit:
        lines.append(f"\n... {len(rows) - limit} more (--limit N)")
    return "\n".join(lines)


def summary(report: dict) -> str:
    """A short table of the report for the terminal."""
    lines = [f"{'stage':<16}{'docs in':>10}{'docs out':>10}{'words out':>12}  top drop reasons"]
    for stage, s in report["stages"].items():
        top = ", ".join(f"{k}={v}" for k, v in Counter(s["dropped"]).most_common(3))
        lines.append(f"{stage:<16}{s['docs_in']:>10}{s['docs_out']:>10}{s['words_out']:>12}  {top}")
    lines.append(f"tokens: {report['tokens']}  documents: {report['documents']}  "
                 f"-> {report['output_prefix']}.bin/.idx")
    return "\n".join(lines)
