"""Gopher quality rules (Rae et al. 2021, arXiv:2112.11446, App. A.1.1 "Quality filtering").

Defaults are the paper's thresholds; every one is a field so a config can loosen it (our bundled
corpus of reST docs, full of ``::`` and ``..`` markup and short code lines, needs that).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from data_pipeline.filters.drop import Drop

# App. A.1.1: "at least two of the following English stop words: the, be, to, of, and, that,
# have, with".
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_BULLETS = ("-", "*", "•", "‣", "⁃", "◦", "▪", "●")
_ELLIPSES = ("...", "…")


@dataclass
class GopherQualityFilter:
    """Drop reasons are ``gopher_quality.<rule>``; ``apply`` never changes the text."""

    enabled: bool = True
    """Run these rules (false: every document passes them)."""
    min_words: int = 50
    """Rae et al. 2021: "fewer than 50 or greater than 100,000 words" are removed."""
    max_words: int = 100_000
    """Upper end of that range: longer documents are dropped (whitespace-separated words)."""
    min_mean_word_length: float = 3.0
    """"mean word length is outside the range of 3 to 10 characters"."""
    max_mean_word_length: float = 10.0
    """Upper end of that range, in characters per word."""
    max_symbol_word_ratio: float = 0.1
    """"symbol-to-word ratio greater than 0.1 for either the hash symbol or the ellipsis"."""
    max_bullet_lines_ratio: float = 0.9
    """"more than 90% of lines starting with a bullet point"."""
    max_ellipsis_lines_ratio: float = 0.3
    """"more than 30% ending with an ellipsis"."""
    min_alpha_words_ratio: float = 0.8
    """"80% of words in a document contain at least one alphabetic character"."""
    min_stop_words: int = 2
    """Drop a document with fewer occurrences than this of `stop_words` ("does not contain at least two of the
    following English words"); occurrences are counted, so "the ... the" is two. 0 disables the rule."""
    stop_words: list[str] = field(default_factory=lambda: list(GOPHER_STOP_WORDS))
    """Words `min_stop_words` counts, compared lowercase with whitespace-split words (punctuation attached does not
    match): Gopher's eight, "the, be, to, of, and, that, have, with". English-only: replace them for other text."""

    name = "gopher_quality"

    def check(self, text: str) -> Drop | None:
        """The first rule the text breaks, with the measured value and its threshold, or None."""
        words = text.split()
        n = len(words)
        if n < self.min_words:
            return Drop("gopher_quality.too_few_words", n, "<", self.min_words)
        if n > self.max_words:
            return Drop("gopher_quality.too_many_words", n, ">", self.max_words)
        mean_len = len("".join(words)) / n  # the characters of all words, summed in C
        if mean_len < self.min_mean_word_length:
            return Drop("gopher_quality.mean_word_length_low", mean_len, "<", self.min_mean_word_length)
        if mean_len > self.max_mean_word_length:
            return Drop("gopher_quality.mean_word_length_high", mean_len, ">", self.max_mean_word_length)
        hashes = text.count("#")
        ellipses = text.count("...") + text.count("…")
        if max(hashes, ellipses) / n > self.max_symbol_word_ratio:
            return Drop("gopher_quality.symbol_word_ratio", max(hashes, ellipses) / n, ">", self.max_symbol_word_ratio)
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            bullets = sum(ln.lstrip().startswith(_BULLETS) for ln in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return Drop("gopher_quality.bullet_lines", bullets / len(lines), ">", self.max_bullet_lines_ratio)
            ellipsis_end = sum(ln.rstrip().endswith(_ELLIPSES) for ln in lines)
            if ellipsis_end / len(lines) > self.max_ellipsis_lines_ratio:
                return Drop("gopher_quality.ellipsis_lines", ellipsis_end / len(lines), ">",
                            self.max_ellipsis_lines_ratio)
        # Each distinct word tested once, weighted by its count: documents repeat most of their words.
        counts = Counter(words)
        alpha = sum(c for w, c in counts.items() if any(map(str.isalpha, w)))
        if alpha / n < self.min_alpha_words_ratio:
            return Drop("gopher_quality.alpha_words_ratio", alpha / n, "<", self.min_alpha_words_ratio)
        stop = set(self.stop_words)
        stops = sum(c for w, c in counts.items() if w.lower() in stop)
        if stops < self.min_stop_words:
            return Drop("gopher_quality.stop_words", stops, "<", self.min_stop_words)
        return None

    def reason(self, text: str) -> str | None:
        """The first rule the text breaks, or None."""
        drop = self.check(text)
        return drop.reason if drop else None

    def evaluate(self, text: str) -> tuple[str, Drop | None]:
        return text, self.check(text)

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)
