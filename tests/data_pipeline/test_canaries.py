"""Planted canaries (data_pipeline/canaries.py): exact copy counts in data.bin, held-out canaries absent from
it, counted in the report, resumable like every stage, and their settings validated."""

import json

import numpy as np
import pytest

from data_pipeline.canaries import CanaryConfig, build_plan, interleave
from data_pipeline.config import DataConfigError, load_data_config
from data_pipeline.indexed import IndexedDataset
from tests.data_pipeline.corpus import good_doc, write_jsonl
from tests.data_pipeline.test_resume import outputs, prepare

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CANARIES = ["canaries.enabled=true", "canaries.per_bucket=3", "canaries.repeats=[1,2,5]", "canaries.length=8",
            "canaries.secret_digits=4"]


def occurrences(stream: np.ndarray, ids: list[int]) -> int:
    """How many times the token sequence ``ids`` occurs in the flat token stream."""
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(ids))
    return int(np.all(windows == np.asarray(ids, dtype=stream.dtype), axis=1).sum())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canaries")
    docs = [(f"d{i}", good_doc(i, 120)) for i in range(10)] + [("dup", good_doc(2, 120))]
    inputs = [str(write_jsonl(tmp / "a.jsonl", docs[:6])), str(write_jsonl(tmp / "b.jsonl", docs[6:]))]
    done = prepare(inputs, tmp / "ref", extra=CANARIES)
    assert done.returncode == 0, done.stderr
    return tmp, inputs, tmp / "ref"


def test_every_inserted_canary_occurs_exactly_its_repeats_and_no_held_out_one_at_all(prepared):
    _, _, out = prepared
    plan = json.loads((out / "canaries.json").read_text())
    ds = IndexedDataset(out / "data")
    stream = ds.get_tokens(0, ds.num_tokens())
    eod = json.loads((out / "report.json").read_text())["tokenizer"]["eod_id"]
    assert len(plan["canaries"]) == 3 * 2 * 3 * 2  # buckets × kinds × per_bucket × (inserted, held out)
    for c in plan["canaries"]:
        assert occurrences(stream, c["token_ids"]) == c["repeats"], c["id"]
        assert len(c["documents"]) == c["repeats"]
        for d in c["documents"]:
            assert list(ds[d]) == c["token_ids"] + [eod]
    held_out = [c for c in plan["canaries"] if not c["inserted"]]
    assert len(held_out) == 18 and all(c["repeats"] == 0 for c in held_out)
    assert {c["kind"] for c in held_out} == {"random", "secret"}


def test_report_counts_the_canaries_and_the_corpus_apart(prepared):
    _, _, out = prepared
    report = json.loads((out / "report.json").read_text())
    section = report["canaries"]
    assert section["inserted"] == section["held_out"] == 18
    assert section["inserted_documents"] == 2 * 3 * (1 + 2 + 5)
    assert {b: row["copies"] for b, row in section["buckets"].items()} == {"1": 6, "2": 12, "5": 30}
    ds = IndexedDataset(out / "data")
    assert report["documents"] == len(ds) == report["stages"]["tokenize"]["docs_out"] + 48
    assert report["tokens"] == ds.num_tokens() == (report["stages"]["tokenize"]["tokens_out"]
                                                   + section["inserted_tokens"])


@pytest.mark.parametrize("crash_after", [10, 21])
def test_resume_after_kill_with_canaries_is_byte_identical(prepared, crash_after):
    tmp, inputs, ref = prepared
    out = tmp / f"crash{crash_after}"
    assert prepare(inputs, out, crash_after, CANARIES).returncode == 137
    resumed = prepare(inputs, out, extra=CANARIES)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(out) == outputs(ref)


class _Tok:
    vocab_size, bos_id, eos_id, pad_id = 50, 1, 2, 0

    def encode(self, text):
        return [3 + ord(ch) % 40 for ch in text]

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_plan_places_copies_among_the_first_max_position_of_the_corpus_and_interleave_puts_them_there():
    cfg = CanaryConfig(enabled=True, per_bucket=4, repeats=[1, 8], length=6, max_position=0.5)
    plan = build_plan(cfg, _Tok(), corpus_documents=100)
    assert plan == build_plan(cfg, _Tok(), corpus_documents=100)
    docs = sorted(d for c in plan["canaries"] for d in c["documents"])
    assert len(docs) == len(set(docs)) == 2 * 4 * 9 == plan["inserted_documents"]
    # Copy n sits before corpus document docs[n] - n, which is at most 50.
    assert all(d - n <= 50 for n, d in enumerate(docs))
    corpus = [np.array([100 + i]) for i in range(100)]
    merged = list(interleave(corpus, plan, eod_id=2))
    assert len(merged) == 172
    assert [int(m[0]) for m in merged if len(m) == 1] == list(range(100, 200))
    for c in plan["canaries"]:
        for d in c["documents"]:
            assert list(merged[d]) == c["token_ids"] + [2]
        assert all(t not in (0, 1, 2) for t in c["token_ids"]) or c["kind"] == "secret"


@pytest.mark.parametrize("override, message", [
    ("canaries.per_bucket=0", "canaries.per_bucket=0 must be >= 1"),
    ("canaries.repeats=[4,4]", "must be distinct counts >= 1"),
    ("canaries.max_position=1.5", "canaries.max_position=1.5 must be in (0, 1]"),
    ("canaries.lenght=3", "lenght"),
])
def test_bad_canary_settings_are_named(tmp_path, override, message):
    src = write_jsonl(tmp_path / "a.jsonl", [("d", good_doc(0))])
    with pytest.raises(DataConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_data_config(None, [f"inputs=[\"{src}\"]", f"output={tmp_path / 'out'}", "canaries.enabled=true",
                                override])
