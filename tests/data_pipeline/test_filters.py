"""One crafted document per drop reason, each at the filter's paper-default thresholds (except
C4's bad-word list, which is empty by default), plus a clean document that every filter keeps."""

from itertools import product

import pytest

from data_pipeline.filters import C4Filter, FineWebFilter, GopherQualityFilter, GopherRepetitionFilter
from tests.data_pipeline.corpus import good_doc, words

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

GOOD = good_doc(0)
# 10,000 distinct 5-letter words: a fixed length makes the character fractions exact.
W5 = ["".join(p) for p in product("bdgkmprstv", "aeiou", "bdgkmprstv", "aeiou", "lnrs")]


def lines(n, start=0, per_line=8, end="."):
    return "\n".join(" ".join(W5[(start + i * per_line + k) % len(W5)] for k in range(per_line)) + end
                     for i in range(n))


def repeated_ngram_doc(n, total_words):
    """Unique 5-letter words with one n-gram of them occurring twice (far apart)."""
    ws = [W5[k] for k in range(total_words - n)]
    gram = ws[:n]
    ws[total_words // 2:total_words // 2] = gram
    return " ".join(ws)


def top_ngram_doc(n, unique_words_per_line, n_lines=30):
    """Each line: unique words then one shared n-gram."""
    gram = ["abcde", "fghij", "klmno", "pqrst"][:n]
    out, k = [], 100
    for _ in range(n_lines):
        out.append(" ".join(W5[k:k + unique_words_per_line] + gram))
        k += unique_words_per_line
    return "\n".join(out)


def dup_para_char_doc():
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
    a = "\n".join(letters)  # 40 one-character lines: paragraph chars include 39 newlines
    pairs = [x + y for x in "opqrstuvwxyz" for y in "opqrstuvwxyz"][:60]
    u = ["\n".join(pairs[i:i + 20]) for i in (0, 20, 40)]
    return "\n\n".join(u + [a, a])


GOPHER_QUALITY_CASES = {
    "too_few_words": "The cat and the dog sat.",
    "too_many_words": " ".join(words(100_001, 1)),
    "mean_word_length_low": " ".join(["to", "of", "an", "be", "it"] * 20),
    "mean_word_length_high": " ".join(["extraordinarily", "incomprehensible", "the", "internationalization",
                                       "and"] * 20),
    "symbol_word_ratio": GOOD + "\n" + "# " * 40,
    "bullet_lines": "\n".join("-" + " ".join(words(8, i)) for i in range(20)),
    "ellipsis_lines": "\n".join(" ".join(words(12, i)) + "…" for i in range(20)),
    "alpha_words_ratio": " ".join(w if i % 3 else "1234" for i, w in enumerate(words(240, 2))),
    "stop_words": " ".join(w for w in words(400, 3) if w not in ("the", "and", "of", "to", "with", "that")),
}

GOPHER_REPETITION_CASES = {
    "dup_line_frac": lines(10) + "\n" + "\n".join(["Short line here."] * 10),
    "dup_line_char_frac": lines(20, per_line=4) + "\n" + "\n".join([lines(1, 500, per_line=40)] * 2),
    "dup_para_frac": lines(20) + "\n\nSame para.\n\nSame para.",
    "dup_para_char_frac": dup_para_char_doc(),
    "top_2gram": top_ngram_doc(2, 3),
    "top_3gram": top_ngram_doc(3, 8),
    "top_4gram": top_ngram_doc(4, 15),
    "dup_5gram": repeated_ngram_doc(5, 60),
    "dup_6gram": repeated_ngram_doc(6, 82),
    "dup_7gram": repeated_ngram_doc(7, 104),
    "dup_8gram": repeated_ngram_doc(8, 128),
    "dup_9gram": repeated_ngram_doc(9, 156),
    "dup_10gram": repeated_ngram_doc(10, 190),
}

C4_CASES = {
    "lorem_ipsum": GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "curly_bracket": GOOD + "\nfunction f() { return 1; }",
    "bad_word": GOOD + " Frobnicate.",
    "too_few_sentences": "This sentence has more than five words in it. So does this other one here.",
}

FINEWEB_CASES = {
    "empty": "   \n  ",
    "line_punct_ratio": lines(20, end=""),
    "dup_line_char_ratio": lines(20) + "\n" + "\n".join([lines(1, 300)] * 5),
    "short_line_ratio": lines(5) + "\n" + "\n".join(f"Item {w}." for w in W5[:20]),
    "newline_word_ratio": "\n".join(f"{a}{b}{c} {b}{c}{a} {c}{a}{b}." for a, b, c in zip(W5, W5[5:], W5[9:40])),
}


@pytest.mark.parametrize("rule", sorted(GOPHER_QUALITY_CASES))
def test_gopher_quality_reasons(rule):
    assert GopherQualityFilter().apply(GOPHER_QUALITY_CASES[rule])[1] == f"gopher_quality.{rule}"


@pytest.mark.parametrize("rule", sorted(GOPHER_REPETITION_CASES))
def test_gopher_repetition_reasons(rule):
    assert GopherRepetitionFilter().apply(GOPHER_REPETITION_CASES[rule])[1] == f"gopher_repetition.{rule}"


@pytest.mark.parametrize("rule", sorted(C4_CASES))
def test_c4_reasons(rule):
    assert C4Filter(bad_words=["frobnicate"]).apply(C4_CASES[rule])[1] == f"c4.{rule}"


@pytest.mark.parametrize("rule", sorted(FINEWEB_CASES))
def test_fineweb_reasons(rule):
    assert FineWebFilter().apply(FINEWEB_CASES[rule])[1] == f"fineweb.{rule}"


def test_clean_document_passes_every_filter_unchanged():
    for f in (GopherQualityFilter(), GopherRepetitionFilter(), FineWebFilter()):
        assert f.apply(GOOD) == (GOOD, None), type(f).__name__
    text, reason = C4Filter().apply(GOOD)
    assert reason is None and text.replace("\n", "") == GOOD.replace("\n", "")


def test_c4_removes_boilerplate_lines_but_keeps_the_page():
    extra = ("\nPlease enable JavaScript to view the comments powered by us."
             "\nRead our privacy policy before you continue to the site."
             "\nA line without terminal punctuation at the end of it")
    text, reason = C4Filter().apply(GOOD + extra)
    assert reason is None
    assert "JavaScript" not in text and "privacy" not in text and "without terminal" not in text


def test_thresholds_are_configurable():
    doc = GOPHER_QUALITY_CASES["too_few_words"]
    assert GopherQualityFilter(min_words=3, min_stop_words=1).apply(doc)[1] is None
    assert GopherRepetitionFilter(dup_ngram_max_char_frac={5: 0.5}).apply(
        GOPHER_REPETITION_CASES["dup_5gram"])[1] is None
    assert not GopherQualityFilter(enabled=False).enabled
