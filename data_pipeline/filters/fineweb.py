"""FineWeb's extra filters (Penedo et al. 2024, arXiv:2406.17557, Sec. 3.4 "Developing
additional heuristic filters"), with the thresholds of datatrove's ``FineWebQualityFilter``:
  * fraction of lines ending in punctuation <= 0.12 -> drop,
  * fraction of characters in duplicated lines >= 0.1 (the paper; datatrove uses 0.01 on
    whole-document character counts, we follow the paper's figure),
  * fraction of lines shorter than 30 characters >= 0.67 -> drop,
  * newline-to-word ratio > 0.3 (datatrove's list-like page rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from data_pipeline.filters.drop import Drop

_PUNCT = (".", "!", "?", '"', "'", ")", "”", "’", ":", ";")


@dataclass
class FineWebFilter:
    """Drop reasons are ``fineweb.<rule>``; ``apply`` never changes the text."""

    enabled: bool = True
    """Run these rules (false: every document passes them)."""
    min_line_punct_ratio: float = 0.12
    """Drop a document when at most this fraction of its non-blank lines end in punctuation (. ! ? quotes ) : ;)."""
    max_dup_line_char_ratio: float = 0.1
    """Drop when lines repeating an earlier line hold at least this fraction of the line characters (the paper's
    0.1; datatrove's code uses 0.01)."""
    short_line_length: int = 30
    """Characters (stripped) up to which a line counts as short, for `max_short_line_ratio`."""
    max_short_line_ratio: float = 0.67
    """Drop when at least this fraction of the non-blank lines are short: menus, lists of links, tables."""
    max_newline_word_ratio: float = 0.3
    """Drop when the document has more than this many newlines per word (datatrove's rule for list-like pages)."""

    name = "fineweb"

    def check(self, text: str) -> Drop | None:
        """The first rule the text breaks, with the measured ratio and its threshold, or None."""
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if not lines:
            return Drop("fineweb.empty", 0, "<", 1)
        punct = sum(ln.endswith(_PUNCT) for ln in lines) / len(lines)
        if punct <= self.min_line_punct_ratio:
            return Drop("fineweb.line_punct_ratio", punct, "<=", self.min_line_punct_ratio)
        seen: set[str] = set()
        dup_chars = 0
        for ln in lines:
            if ln in seen:
                dup_chars += len(ln)
            seen.add(ln)
        dup = dup_chars / max(sum(len(ln) for ln in lines), 1)
        if dup >= self.max_dup_line_char_ratio:
            return Drop("fineweb.dup_line_char_ratio", dup, ">=", self.max_dup_line_char_ratio)
        short = sum(len(ln) <= self.short_line_length for ln in lines) / len(lines)
        if short >= self.max_short_line_ratio:
            return Drop("fineweb.short_line_ratio", short, ">=", self.max_short_line_ratio)
        newlines = text.count("\n") / max(len(text.split()), 1)
        if newlines > self.max_newline_word_ratio:
            return Drop("fineweb.newline_word_ratio", newlines, ">", self.max_newline_word_ratio)
        return None

    def reason(self, text: str) -> str | None:
        drop = self.check(text)
        return drop.reason if drop else None

    def evaluate(self, text: str) -> tuple[str, Drop | None]:
        return text, self.check(text)

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)
