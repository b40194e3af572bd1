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

_PUNCT = (".", "!", "?", '"', "'", ")", "”", "’", ":", ";")


@dataclass
class FineWebFilter:
    """Drop reasons are ``fineweb.<rule>``; ``apply`` never changes the text."""

    enabled: bool = True
    min_line_punct_ratio: float = 0.12
    max_dup_line_char_ratio: float = 0.1
    short_line_length: int = 30
    max_short_line_ratio: float = 0.67
    max_newline_word_ratio: float = 0.3

    name = "fineweb"

    def reason(self, text: str) -> str | None:
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if not lines:
            return "fineweb.empty"
        if sum(ln.endswith(_PUNCT) for ln in lines) / len(lines) <= self.min_line_punct_ratio:
            return "fineweb.line_punct_ratio"
        seen: set[str] = set()
        dup_chars = 0
        for ln in lines:
            if ln in seen:
                dup_chars += len(ln)
            seen.add(ln)
        if dup_chars / max(sum(len(ln) for ln in lines), 1) >= self.max_dup_line_char_ratio:
            return "fineweb.dup_line_char_ratio"
        if sum(len(ln) <= self.short_line_length for ln in lines) / len(lines) >= self.max_short_line_ratio:
            return "fineweb.short_line_ratio"
        if text.count("\n") / max(len(text.split()), 1) > self.max_newline_word_ratio:
            return "fineweb.newline_word_ratio"
        return None

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)
