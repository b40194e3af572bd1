"""Exact-substring deduplication (Lee et al. 2021, arXiv:2107.06499, Sec. 4.1 "ExactSubstr").

Lee et al. build a suffix array of the whole corpus and remove every repeat of a span of at
least 50 tokens. We do the same over whitespace words (the stage runs before tokenization): the
suffix array is built by prefix doubling (Manber & Myers 1990), stopped as soon as suffixes are
ranked by their first ``m`` words (m the largest power of two <= min_words); two positions start
the same ``min_words``-gram exactly when ranks agree at ``i`` and ``i + min_words - m``. Every
occurrence of a repeated gram except the first (in corpus order) is marked, and the union of
marked windows -- which covers each repeated span of any length >= min_words -- is cut out.
Each document ends in a unique separator word, so no match crosses documents.

Memory: whole-corpus, in RAM (about 40 B per word). Lee et al. shard the suffix array on disk
for terabyte corpora; this implementation is for corpora up to a few hundred million words and
runs as one process in the merge step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\S+")


@dataclass
class SubstringConfig:
    """Exact-substring removal; off by default (it rewrites documents and costs a global pass)."""

    enabled: bool = False
    """Cut every repeat of a span of `min_words` or more words out of the documents, keeping its first occurrence
    in corpus order (Lee et al. 2021). Off by default: it rewrites documents and holds the whole corpus in RAM
    (about 40 B per word) in the merge step."""
    min_words: int = 50
    """Lee et al.'s threshold of 50 tokens, applied to whitespace words."""
    min_words_left: int = 5
    """A document left with fewer words is dropped (reason ``substring_dedup.emptied``)."""


def _dense(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].astype(np.int64)


def _pair_rank(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense rank of the pairs (a[i], b[i])."""
    order = np.lexsort((b, a))
    sa, sb = a[order], b[order]
    new = np.empty(a.size, np.int64)
    step = np.concatenate(([0], ((sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])).astype(np.int64)))
    new[order] = np.cumsum(step)
    return new


def repeated_mask(ids: np.ndarray, min_words: int) -> np.ndarray:
    """Boolean mask over ``ids`` (int64 word ids): True on words inside a later repeat of some
    ``min_words``-gram. The first occurrence of each gram stays unmarked."""
    n = ids.size
    if n < min_words or min_words < 1:
        return np.zeros(n, bool)
    rank, m = _dense(ids), 1
    while 2 * m <= min_words:  # prefix doubling: rank now orders suffixes by their first 2m words
        shifted = np.full(n, -1, np.int64)
        shifted[:n - m] = rank[m:]
        rank, m = _pair_rank(rank, shifted), 2 * m
    starts = np.arange(n - min_words + 1)
    key = _pair_rank(rank[starts], rank[starts + min_words - m])
    order = np.lexsort((starts, key))  # group equal grams, by position within a group
    k = key[order]
    later = np.concatenate(([False], k[1:] == k[:-1]))  # not the first occurrence of its gram
    diff = np.zeros(n + 1, np.int64)
    np.add.at(diff, starts[order][later], 1)
    np.add.at(diff, starts[order][later] + min_words, -1)
    return np.cumsum(diff[:n]) > 0


def remove_repeats(texts: list[str], cfg: SubstringConfig) -> list[str | None]:
    """For each text, its text with repeated spans cut out, or None when too little is left.
    Texts with nothing repeated come back unchanged (the same object)."""
    vocab: dict[str, int] = {}
    spans, ids = [], []
    for doc, text in enumerate(texts):
        words = list(_WORD.finditer(text))
        spans.append(words)
        ids.extend(vocab.setdefault(w.group(), len(vocab)) for w in words)
        ids.append(-1 - doc)  # unique separator: grams never cross documents
    mask = repeated_mask(np.asarray(ids, np.int64), cfg.min_words)
    out: list[str | None] = []
    pos = 0
    for text, words in zip(texts, spans):
        marked = mask[pos:pos + len(words)]
        pos += len(words) + 1
        if not marked.any():
            out.append(text)
            continue
        pieces, cursor = [], 0
        for w, cut in zip(words, marked):
            if cut:
                pieces.append(text[cursor:w.start()])
                cursor = w.end()
        pieces.append(text[cursor:])
        new = re.sub(r"[ \t]{2,}", " ", "".join(pieces)).strip()
        out.append(new if int((~marked).sum()) >= cfg.min_words_left else None)
    return out
