"""Decontamination: a document sharing a 13-gram with an evaluation example is dropped."""

from data_pipeline.decontaminate import DecontaminateConfig, Decontaminator
from tests.data_pipeline.corpus import good_doc, words, write_jsonl
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_shared_13gram_is_caught_and_12gram_is_not(tmp_path):
    question = " ".join(words(30, 99))
    path = write_jsonl(tmp_path / "eval.jsonl", [("q1", question)])
    d = Decontaminator(DecontaminateConfig(eval_paths=[str(path)]))
    qw = question.split()
    # Case and punctuation do not hide the overlap (GPT-3 App. C normalisation).
    assert d.match(good_doc(1) + " " + " ".join(qw[5:18]).upper() + "!") == "q1"
    assert d.match(good_doc(1) + " " + " ".join(qw[5:17])) is None
    assert d.match(good_doc(2)) is None


def test_short_eval_examples_match_whole(tmp_path):
    path = write_jsonl(tmp_path / "eval.jsonl", [("short", "What is the capital of Freedonia?")])
    d = Decontaminator(DecontaminateConfig(eval_paths=[str(path)]))
    assert d.match("Quiz: what is the capital of freedonia, asked the host.") == "short"
    assert d.match("What is the capital of France?") is None
