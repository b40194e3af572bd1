"""The quality filters as they were before issue 16 made them fast (verbatim: gopher_quality.py and
gopher_repetition.py at commit ae9d346), kept as the reference that tests/data_pipeline/test_filter_speed.py holds
the fast ones to, decision for decision. Not used by the package."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_BULLETS = ("-", "*", "•", "‣", "⁃", "◦", "▪", "●")
_ELLIPSES = ("...", "…")


@dataclass
class GopherQualityFilter:
    """Drop reasons are ``gopher_quality.<rule>``; ``apply`` never changes the text."""

    enabled: bool = True
    min_words: int = 50
    """Rae et al. 2021: "fewer than 50 or greater than 100,000 words" are removed."""
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    """"mean word length is outside the range of 3 to 10 characters"."""
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """"symbol-to-word ratio greater than 0.1 for either the hash symbol or the ellipsis"."""
    max_bullet_lines_ratio: float = 0.9
    """"more than 90% of lines starting with a bullet point"."""
    max_ellipsis_lines_ratio: float = 0.3
    """"more than 30% ending with an ellipsis"."""
    min_alpha_words_ratio: float = 0.8
    """"80% of words in a document contain at least one alphabetic character"."""
    min_stop_words: int = 2
    stop_words: list[str] = field(default_factory=lambda: list(GOPHER_STOP_WORDS))

    name = "gopher_quality"

    def reason(self, text: str) -> str | None:
        """The first rule the text breaks, or None."""
        words = text.split()
        n = len(words)
        if n < self.min_words:
            return "gopher_quality.too_few_words"
        if n > self.max_words:
            return "gopher_quality.too_many_words"
        mean_len = sum(len(w) for w in words) / n
        if mean_len < self.min_mean_word_length:
            return "gopher_quality.mean_word_length_low"
        if mean_len > self.max_mean_word_length:
            return "gopher_quality.mean_word_length_high"
        hashes = text.count("#")
        ellipses = text.count("...") + text.count("…")
        if max(hashes, ellipses) / n > self.max_symbol_word_ratio:
            return "gopher_quality.symbol_word_ratio"
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            bullets = sum(ln.lstrip().startswith(_BULLETS) for ln in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "gopher_quality.bullet_lines"
            ellipsis_end = sum(ln.rstrip().endswith(_ELLIPSES) for ln in lines)
            if ellipsis_end / len(lines) > self.max_ellipsis_lines_ratio:
                return "gopher_quality.ellipsis_lines"
        alpha = sum(any(c.isalpha() for c in w) for w in words)
        if alpha / n < self.min_alpha_words_ratio:
            return "gopher_quality.alpha_words_ratio"
        stop = set(self.stop_words)
        if sum(w.lower() in stop for w in words) < self.min_stop_words:
            return "gopher_quality.stop_words"
        return None

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)
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
