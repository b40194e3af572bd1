"""What every stage did: counts in/out, drops per reason, and the progress bar it shows.

report.json is deterministic (no timings, no absolute paths), so a resumed run reproduces it
byte for byte. "words" are whitespace-separated words, the unit the text stages see; "tokens"
are tokenizer tokens (including the appended EOD), counted only from the tokenize stage on.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

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


def summary(report: dict) -> str:
    """A short table of the report for the terminal."""
    lines = [f"{'stage':<16}{'docs in':>10}{'docs out':>10}{'words out':>12}  top drop reasons"]
    for stage, s in report["stages"].items():
        top = ", ".join(f"{k}={v}" for k, v in Counter(s["dropped"]).most_common(3))
        lines.append(f"{stage:<16}{s['docs_in']:>10}{s['docs_out']:>10}{s['words_out']:>12}  {top}")
    lines.append(f"tokens: {report['tokens']}  documents: {report['documents']}  "
                 f"-> {report['output_prefix']}.bin/.idx")
    return "\n".join(lines)
