"""The fast quality filters decide exactly as the old ones (tests/data_pipeline/reference_filters.py): every
document's keep/drop and reason, and every n-gram statistic bit for bit, on the bundled corpus and on the crafted
documents of every drop reason. Their speed is measured in bench/bench_data_pipeline.py, not asserted here."""
import dataclasses
import json
import random
from pathlib import Path

import pytest

from data_pipeline.config import load_data_config
from data_pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, apply_filters
from data_pipeline.filters.gopher_repetition import WordNgrams
from tests.data_pipeline import reference_filters as ref
from tests.data_pipeline.test_filters import GOPHER_QUALITY_CASES, GOPHER_REPETITION_CASES

ROOT = Path(__file__).resolve().parents[2]


def _corpus() -> list[str]:
    """The bundled corpus, plus each document's first half and a copy with a repeated run of words (more drops
    by the repetition rules, and n-gram ties), plus the crafted documents."""
    texts = [json.loads(line)["text"] for line in open(ROOT / "data" / "raw" / "python_docs.jsonl")]
    rng = random.Random(0)
    more = []
    for t in texts:
        words = t.split()
        more.append(t[:len(t) // 2])
        i = rng.randrange(max(len(words) - 12, 1))
        more.append(" ".join(words + words[i:i + rng.randint(5, 12)] * rng.randint(1, 4)))
    return texts + more + list(GOPHER_QUALITY_CASES.values()) + list(GOPHER_REPETITION_CASES.values())


CORPUS = _corpus()


def _pairs():
    """(fast, reference) filter pairs: paper thresholds and the bundled data config's loosened ones."""
    config = load_data_config(ROOT / "configs" / "data" / "default.yaml", validate=False).filters
    out = [(GopherQualityFilter(), ref.GopherQualityFilter()), (GopherRepetitionFilter(), ref.GopherRepetitionFilter())]
    for fast in (config.gopher_quality, config.gopher_repetition):
        cls = ref.GopherQualityFilter if fast.name == "gopher_quality" else ref.GopherRepetitionFilter
        out.append((fast, cls(**{f.name: getattr(fast, f.name) for f in dataclasses.fields(fast)})))
    return out


@pytest.mark.parametrize("fast,old", _pairs(), ids=lambda f: f.name)
def test_every_decision_equals_the_reference(fast, old):
    decisions = [fast.apply(t) for t in CORPUS]
    assert decisions == [old.apply(t) for t in CORPUS]
    # The comparison covers drops of several reasons and keeps, not one outcome everywhere.
    assert len({reason for _, reason in decisions}) >= 3


def test_ngram_statistics_equal_the_reference_bit_for_bit():
    for text in CORPUS[::3]:
        words = text.split()
        grams = WordNgrams(words)
        for n in range(1, 13):
            assert grams.top_char_fraction(n) == ref.top_ngram_char_fraction(words, n), n
            assert grams.dup_char_fraction(n) == ref.dup_ngram_char_fraction(words, n), n


def test_filter_chain_decisions_equal_the_reference_on_the_corpus():
    filters = load_data_config(ROOT / "configs" / "data" / "default.yaml", validate=False).filters.active()
    old = [ref.GopherQualityFilter(**dataclasses.asdict(f)) if f.name == "gopher_quality" else
           ref.GopherRepetitionFilter(**dataclasses.asdict(f)) if f.name == "gopher_repetition" else f for f in filters]
    assert [apply_filters(t, filters) for t in CORPUS] == [apply_filters(t, old) for t in CORPUS]


def test_edge_cases():
    for words in ([], ["a"], ["a", "a"], ["a", "b"] * 3, ["x"] * 11):
        grams = WordNgrams(words)
        for n in range(1, 12):
            assert grams.top_char_fraction(n) == ref.top_ngram_char_fraction(words, n)
            assert grams.dup_char_fraction(n) == ref.dup_ngram_char_fraction(words, n)
