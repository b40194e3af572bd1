"""Gopher repetition rules (Rae et al. 2021, arXiv:2112.11446, App. A.1.1, Table A1).

Table A1 thresholds: duplicate line fraction 0.30, duplicate paragraph fraction 0.30, characters
in duplicate lines 0.20, characters in duplicate paragraphs 0.20; top 2/3/4-gram character
fraction 0.20/0.18/0.16; characters in duplicated 5..10-grams 0.15, 0.14, 0.13, 0.12, 0.11, 0.10.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_PARAGRAPHS = re.compile(r"\n{2,}")


def _dup_stats(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, characters in those repeats)."""
    seen: set[str] = set()
    count = chars = 0
    for it in items:
        if it in seen:
            count += 1
            chars += len(it)
        else:
            seen.add(it)
    return count, chars


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters covered by the most frequent n-gram (counted once per occurrence) over all
    word characters, as in Rae et al.: "fraction of characters contained within the most
    frequently-occurring n-gram"."""
    ngrams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not ngrams:
        return 0.0
    gram, count = ngrams.most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(len(w) for w in words)
    return sum(len(w) for w in gram) * count / max(total, 1)


def dup_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of words that lie inside any n-gram occurring more than once, each word
    counted once even when covered by several overlapping duplicates (Rae et al. A.1.1)."""
    if len(words) < n:
        return 0.0
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if counts[tuple(words[i:i + n])] > 1:
            for j in range(i, i + n):
                covered[j] = True
    total = sum(len(w) for w in words)
    return sum(len(w) for w, c in zip(words, covered) if c) / max(total, 1)


@dataclass
class GopherRepetitionFilter:
    """Drop reasons are ``gopher_repetition.<rule>``; ``apply`` never changes the text."""

    enabled: bool = True
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    top_ngram_max_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngram_max_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})

    name = "gopher_repetition"

    def reason(self, text: str) -> str | None:
        """The first rule the text breaks, or None."""
        chars = max(len(text), 1)
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            n_dup, c_dup = _dup_stats(lines)
            if n_dup / len(lines) > self.max_dup_line_frac:
                return "gopher_repetition.dup_line_frac"
            if c_dup / chars > self.max_dup_line_char_frac:
                return "gopher_repetition.dup_line_char_frac"
        paras = [p for p in _PARAGRAPHS.split(text) if p.strip()]
        if paras:
            n_dup, c_dup = _dup_stats(paras)
            if n_dup / len(paras) > self.max_dup_para_frac:
                return "gopher_repetition.dup_para_frac"
            if c_dup / chars > self.max_dup_para_char_frac:
                return "gopher_repetition.dup_para_char_frac"
        words = text.split()
        for n, limit in sorted(self.top_ngram_max_char_frac.items()):
            if top_ngram_char_fraction(words, int(n)) > limit:
                return f"gopher_repetition.top_{n}gram"
        for n, limit in sorted(self.dup_ngram_max_char_frac.items()):
            if dup_ngram_char_fraction(words, int(n)) > limit:
                return f"gopher_repetition.dup_{n}gram"
        return None

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)
