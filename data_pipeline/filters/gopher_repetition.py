"""Gopher repetition rules (Rae et al. 2021, arXiv:2112.11446, App. A.1.1, Table A1).

Table A1 thresholds: duplicate line fraction 0.30, duplicate paragraph fraction 0.30, characters
in duplicate lines 0.20, characters in duplicate paragraphs 0.20; top 2/3/4-gram character
fraction 0.20/0.18/0.16; characters in duplicated 5..10-grams 0.15, 0.14, 0.13, 0.12, 0.11, 0.10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from data_pipeline.filters.drop import Drop

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


class WordNgrams:
    """Exact n-gram statistics of one document's words, computed once and shared by every rule and n.

    Each n-gram gets a dense integer id, built up from the (n-1)-gram ids: the id of words[i:i+n] is that of the
    pair (id of words[i:i+n-1], id of words[i+n-1]), renumbered by np.unique. Two n-grams get the same id iff
    their words are equal, so counts are exact (no hashing); with the ids, counting and covering are numpy
    passes instead of a Python loop over tuples per n (which was 70% of the filters' time).
    """

    def __init__(self, words: list[str]):
        vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
        self.word_ids = np.fromiter(map(vocab.__getitem__, words), np.int64, len(words))
        self.lengths = np.fromiter(map(len, words), np.int64, len(words))
        self.total_chars = int(self.lengths.sum())
        self._ids = {1: self.word_ids}
        self._cum = np.concatenate(([0], np.cumsum(self.lengths)))

    def ids(self, n: int) -> np.ndarray:
        """Dense ids of the len(words) - n + 1 n-grams, in order of position."""
        top = max(self._ids)
        while top < n:
            prev, words = self._ids[top][:-1], self.word_ids[top:]
            _, self._ids[top + 1] = np.unique(prev * (len(self.word_ids) + 1) + words, return_inverse=True)
            top += 1
        return self._ids[n]

    def _counts_at(self, n: int) -> np.ndarray:
        ids = self.ids(n)
        return np.bincount(ids)[ids]  # occurrences of the n-gram starting at each position

    def top_char_fraction(self, n: int) -> float:
        """Characters covered by the most frequent n-gram (counted once per occurrence) over all word characters, as
        Rae et al.: "fraction of characters contained within the most frequently-occurring n-gram". Ties go to the
        n-gram that occurs first."""
        if len(self.word_ids) < n:
            return 0.0
        counts = self._counts_at(n)
        first = int(np.argmax(counts))  # the earliest position of a most frequent n-gram
        count = int(counts[first])
        if count < 2:
            return 0.0
        gram_chars = int(self._cum[first + n] - self._cum[first])
        return gram_chars * count / max(self.total_chars, 1)

    def dup_char_fraction(self, n: int) -> float:
        """Characters of words that lie inside any n-gram occurring more than once, each word counted once even
        when covered by several overlapping duplicates (Rae et al. A.1.1)."""
        n_words = len(self.word_ids)
        if n_words < n:
            return 0.0
        starts = np.flatnonzero(self._counts_at(n) > 1)
        # +1 where a duplicated n-gram starts, -1 just past its end: a word is covered where the running sum is > 0.
        depth = np.zeros(n_words + 1, np.int64)
        depth[starts] += 1
        depth[starts + n] -= 1
        covered = np.cumsum(depth[:n_words]) > 0
        return int(self.lengths[covered].sum()) / max(self.total_chars, 1)


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """`WordNgrams.top_char_fraction` of one list of words."""
    return WordNgrams(words).top_char_fraction(n)


def dup_ngram_char_fraction(words: list[str], n: int) -> float:
    """`WordNgrams.dup_char_fraction` of one list of words."""
    return WordNgrams(words).dup_char_fraction(n)


@dataclass
class GopherRepetitionFilter:
    """Drop reasons are ``gopher_repetition.<rule>``; ``apply`` never changes the text."""

    enabled: bool = True
    """Run these rules (false: every document passes them)."""
    max_dup_line_frac: float = 0.30
    """Drop a document when more than this fraction of its non-blank lines repeat an earlier line (Table A1: 0.30)."""
    max_dup_para_frac: float = 0.30
    """Drop when more than this fraction of its paragraphs (split at blank lines) repeat an earlier one (0.30)."""
    max_dup_line_char_frac: float = 0.20
    """Drop when the repeated lines hold more than this fraction of the document's characters (0.20)."""
    max_dup_para_char_frac: float = 0.20
    """Drop when the repeated paragraphs hold more than this fraction of the document's characters (0.20)."""
    top_ngram_max_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """{n: limit}: drop when the most frequent word n-gram, counted at every occurrence, covers more than `limit`
    of the word characters (Table A1's 2/3/4-grams). Drop an entry to skip that n; n >= 1."""
    dup_ngram_max_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    """{n: limit}: drop when the words inside any n-gram that occurs more than once hold more than `limit` of the
    word characters, each word counted once (Table A1's 5..10-grams: longer n-grams get a lower bar)."""

    name = "gopher_repetition"

    def check(self, text: str) -> Drop | None:
        """The first rule the text breaks, with the measured fraction and its threshold, or None."""
        chars = max(len(text), 1)
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            n_dup, c_dup = _dup_stats(lines)
            if n_dup / len(lines) > self.max_dup_line_frac:
                return Drop("gopher_repetition.dup_line_frac", n_dup / len(lines), ">", self.max_dup_line_frac)
            if c_dup / chars > self.max_dup_line_char_frac:
                return Drop("gopher_repetition.dup_line_char_frac", c_dup / chars, ">", self.max_dup_line_char_frac)
        paras = [p for p in _PARAGRAPHS.split(text) if p.strip()]
        if paras:
            n_dup, c_dup = _dup_stats(paras)
            if n_dup / len(paras) > self.max_dup_para_frac:
                return Drop("gopher_repetition.dup_para_frac", n_dup / len(paras), ">", self.max_dup_para_frac)
            if c_dup / chars > self.max_dup_para_char_frac:
                return Drop("gopher_repetition.dup_para_char_frac", c_dup / chars, ">", self.max_dup_para_char_frac)
        grams = WordNgrams(text.split())
        for n, limit in sorted(self.top_ngram_max_char_frac.items()):
            frac = grams.top_char_fraction(int(n))
            if frac > limit:
                return Drop(f"gopher_repetition.top_{n}gram", frac, ">", limit)
        for n, limit in sorted(self.dup_ngram_max_char_frac.items()):
            frac = grams.dup_char_fraction(int(n))
            if frac > limit:
                return Drop(f"gopher_repetition.dup_{n}gram", frac, ">", limit)
        return None

    def reason(self, text: str) -> str | None:
        """The first rule the text breaks, or None."""
        drop = self.check(text)
        return drop.reason if drop else None

    def evaluate(self, text: str) -> tuple[str, Drop | None]:
        return text, self.check(text)

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)
