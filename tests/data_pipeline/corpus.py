"""Synthetic documents for the data-pipeline tests: English-like prose that passes every quality
filter at its paper thresholds, with controllable overlap for the dedup tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

STOP = ["the", "and", "of", "to", "with", "that"]
_SYL = ["ka", "lo", "mi", "ren", "tas", "vo", "pel", "dri", "sun", "mar", "tel", "qui", "bor", "nav"]


def vocabulary(size: int = 4000, seed: int = 0) -> list[str]:
    """Distinct pronounceable words of 4-9 letters."""
    rng, words = random.Random(seed), set()
    while len(words) < size:
        w = "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 4)))
        if 4 <= len(w) <= 9:
            words.add(w)
    return sorted(words)


VOCAB = vocabulary()


def words(n: int, seed: int) -> list[str]:
    """n words, one stop word in four, otherwise drawn from VOCAB."""
    rng = random.Random(seed)
    return [rng.choice(STOP) if k % 4 == 1 else rng.choice(VOCAB) for k in range(n)]


def prose(ws: list[str], per_line: int = 12) -> str:
    """Sentences of ``per_line`` words, one per line, each ending in a full stop; a blank line
    every 5 lines makes paragraphs."""
    lines = []
    for i in range(0, len(ws), per_line):
        chunk = ws[i:i + per_line]
        lines.append(" ".join([chunk[0].capitalize()] + chunk[1:]) + ".")
        if len(lines) % 6 == 5:
            lines.append("")
    return "\n".join(lines)


def good_doc(seed: int, n: int = 240) -> str:
    return prose(words(n, seed))


def mutate(ws: list[str], fraction: float, seed: int) -> list[str]:
    """Replace ``fraction`` of the words (at evenly spread positions) with fresh words."""
    rng, out = random.Random(seed), list(ws)
    k = int(round(fraction * len(ws)))
    for pos in rng.sample(range(len(ws)), k):
        out[pos] = "zz" + rng.choice(VOCAB)
    return out


def write_jsonl(path: Path, docs: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in docs:
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return path
