"""Decontamination: drop training documents that share a long n-gram with an evaluation set.

Following GPT-3 (Brown et al. 2020, arXiv:2005.14165, App. C): 13-grams of lower-cased words with
punctuation removed; a document sharing any one of them with any evaluation example is dropped.
Evaluation examples shorter than ``ngram`` words are matched as a whole (their own length).
The n-gram set is held in memory as 64-bit hashes (8 B each plus set overhead): evaluation
sets are small, so this is the simple choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from data_pipeline.readers import read_documents

_WORD = re.compile(r"\w+")


@dataclass
class DecontaminateConfig:
    """Evaluation sets to protect (files or folders any reader accepts)."""

    eval_paths: list[str] = field(default_factory=list)
    """Evaluation sets, read with the same readers as the inputs (format from the path); empty: no
    decontamination. A training document sharing any `ngram`-gram of lowercased words with an example is
    dropped as ``decontaminate.<example id>``."""
    ngram: int = 13
    """GPT-3's 13-grams (Brown et al. 2020, App. C)."""
    text_field: str = "text"
    """Field of an evaluation record (JSONL, parquet, hf) holding the text to protect."""
    id_field: str = "id"
    """Field of an evaluation record naming it in drop reasons; missing, the record's file:line stands in."""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _gram_hash(words: list[str]) -> int:
    return xxhash.xxh3_64_intdigest(" ".join(words).encode("utf-8"))


class Decontaminator:
    """``reason(text)`` returns ``"decontaminate.<eval id>"`` for a contaminated text, else None."""

    def __init__(self, cfg: DecontaminateConfig):
        self.n = cfg.ngram
        self.grams: dict[int, str] = {}
        self.lengths: set[int] = set()
        for path in cfg.eval_paths:
            for doc in read_documents(Path(path), text_field=cfg.text_field, id_field=cfg.id_field):
                words = _words(doc.text)
                k = min(self.n, len(words))
                if k == 0:
                    continue
                self.lengths.add(k)
                for i in range(len(words) - k + 1):
                    self.grams.setdefault(_gram_hash(words[i:i + k]), doc.id)

    def __bool__(self) -> bool:
        return bool(self.grams)

    def match(self, text: str) -> str | None:
        """The id of an evaluation example sharing an n-gram with ``text``, or None."""
        words = _words(text)
        for k in sorted(self.lengths, reverse=True):
            for i in range(len(words) - k + 1):
                hit = self.grams.get(_gram_hash(words[i:i + k]))
                if hit is not None:
                    return hit
        return None
