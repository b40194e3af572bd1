"""End to end through launch/prepare_data.py: drops explained in dropped/, report counts,
dedup across shards and input files, multi-task splitting equal to one task, and a .bin/.idx
that the pretraining dataset reads."""

import json
from pathlib import Path

import pytest

from data_pipeline.config import DataConfigError, load_data_config
from data_pipeline.gpt_dataset import PackedDataset
from data_pipeline.indexed import IndexedDataset
from data_pipeline.pipeline import run
from data_pipeline.tokenizer import Tokenizer
from tests.data_pipeline.corpus import good_doc, mutate, prose, words, write_jsonl

from data_pipeline.cli import DEFAULT_CONFIG
from launch import prepare_data


ROOT = Path(__file__).resolve().parents[2]

SMALL = ["tokenize.vocab_size=400", "tokenize.workers=2", "shards.docs_per_shard=7", "progress=false"]


def make_inputs(tmp_path):
    """Two files; file b holds an exact copy and a near copy of documents of file a, a
    contaminated document, junk, and a malformed line."""
    a_docs = [(f"a{i}", good_doc(i)) for i in range(20)]
    near = prose(mutate(words(240, 3), 0.01, 7))  # 2 of 240 words of a3 replaced: Jaccard ~0.92
    b_docs = [(f"b{i}", good_doc(100 + i)) for i in range(10)]
    b_docs += [("b_exact", a_docs[5][1].upper()), ("b_near", near), ("b_short", "Too short."),
               ("b_contaminated", good_doc(200) + " " + " ".join(words(20, 999)))]
    a = write_jsonl(tmp_path / "in" / "a.jsonl", a_docs)
    b = write_jsonl(tmp_path / "in" / "b.jsonl", b_docs)
    with open(b, "a") as f:
        f.write("{this is not json\n")
    ev = write_jsonl(tmp_path / "in" / "eval.jsonl", [("eval7", " ".join(words(20, 999)))])
    return [str(a), str(b)], str(ev)


def prepare(inputs, out, *extra):
    args = ["--input", *inputs, "--output", str(out), *SMALL, *extra]
    assert prepare_data.main(args) == 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    inputs, ev = make_inputs(tmp)
    prepare(inputs, tmp / "out", f"decontaminate.eval_paths=[{ev}]", "reader.on_error=skip")
    return tmp, inputs, ev


def test_dropped_records_explain_every_drop(prepared):
    tmp, _, _ = prepared
    recs = [json.loads(line) for f in sorted((tmp / "out" / "dropped").glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    b_file = str(tmp / "in" / "b.jsonl")
    assert by_id["b_exact"] == {"id": "b_exact", "reason": "exact_dedup.duplicate", "source": b_file, "index": 10,
                                "snippet": " ".join(good_doc(5).upper().split())[:239] + "…", "duplicate_of": "a5",
                                "value": 1.0, "drop_if": ">=", "threshold": 1.0}
    # Of a near pair, the smaller hash of the id survives (order-independent): here b_near. Their word
    # 5-grams (2 of 240 words replaced) have exact Jaccard 0.92 (default.yaml re-checks: verify, 0.75)
    # and a MinHash estimate near it.
    a3 = by_id["a3"]
    assert {k: a3[k] for k in ("reason", "source", "index", "duplicate_of", "exact_jaccard", "drop_if",
                               "threshold")} == {
        "reason": "minhash_dedup.near_duplicate", "source": str(tmp / "in" / "a.jsonl"), "index": 3,
        "duplicate_of": "b_near", "exact_jaccard": 0.9187, "drop_if": ">=", "threshold": 0.75}
    assert a3["value"] == a3["exact_jaccard"] and 0.85 < a3["jaccard"] <= 1.0
    assert by_id["b_short"] == {"id": "b_short", "reason": "gopher_quality.too_few_words", "source": b_file,
                                "index": 12, "snippet": "Too short.", "value": 2, "drop_if": "<", "threshold": 50}
    assert by_id["b_contaminated"]["reason"] == "decontaminate.eval_overlap"
    assert by_id["b_contaminated"]["eval_id"] == "eval7"
    assert any(r["reason"] == "read.malformed" and "b.jsonl:15" in r["error"] for r in recs)
    assert len(recs) == 5


def test_report_counts_and_dataset_is_readable(prepared):
    tmp, _, _ = prepared
    report = json.loads((tmp / "out" / "report.json").read_text())
    st = report["stages"]
    assert list(st) == ["read", "normalize", "filter", "decontaminate", "exact_dedup", "minhash_dedup", "tokenize"]
    assert st["read"]["docs_in"] == 35 and st["read"]["dropped"] == {"read.malformed": 1}
    for prev, nxt in zip(list(st)[:-1], list(st)[1:]):
        assert st[prev]["docs_out"] == st[nxt]["docs_in"], (prev, nxt)
    assert st["tokenize"]["docs_out"] == report["documents"] == 30
    ds = IndexedDataset(tmp / "out" / "data")
    tok = Tokenizer(tmp / "out" / "tokenizer.model")
    assert len(ds) == 30 and ds.num_tokens() == report["tokens"]
    assert all(int(ds[i][-1]) == tok.eos_id for i in range(len(ds)))
    assert tok.decode(ds[0][:-1].tolist()) == good_doc(0).strip()  # first kept doc round-trips
    sample = PackedDataset(tmp / "out" / "data", seq_len=64)[0]
    assert sample.shape == (65,)
    assert (tmp / "out" / "tokens").is_dir() and len(list((tmp / "out" / "tokens").glob("*.idx"))) == 5


def test_two_tasks_match_one_task(prepared, tmp_path):
    base, inputs, ev = prepared
    cfg_args = SMALL + [f"decontaminate.eval_paths=[{ev}]", "reader.on_error=skip",
                        f"inputs={json.dumps(inputs)}", f"output={tmp_path / 'multi'}"]
    for stage in ("ingest", "dedup", "cluster", "tokenize", "merge"):
        for index in (1, 0):  # task 1 first: nothing may depend on task 0 having run
            if stage in ("cluster", "merge") and index == 1:
                continue
            cfg = load_data_config(DEFAULT_CONFIG,
                                   cfg_args + [f"shards.task_index={index}", "shards.task_count=2"])
            run(cfg, stage, wait_timeout_s=5)
    for name in ("data.bin", "data.idx", "report.json", "tokenizer.model"):
        assert (tmp_path / "multi" / name).read_bytes() == (base / "out" / name).read_bytes(), name


def test_unknown_key_names_the_closest_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dedup:\n  minhash:\n    band: 3\n")
    with pytest.raises(DataConfigError, match=r"c.yaml.*'dedup.minhash.band'.*did you mean 'dedup.minhash.bands'"):
        load_data_config(cfg, ["inputs=[x]", "output=y"])


def test_blend_report_counts_tokens_per_source(prepared):
    from data_pipeline.blend import blend_report

    prefix = str(prepared[0] / "out" / "data")
    rep = blend_report([prefix, prefix], [0.75, 0.25], seq_len=32, samples=100)
    assert [s["samples"] for s in rep["sources"]] == [75, 25]
    assert [s["tokens"] for s in rep["sources"]] == [75 * 32, 25 * 32]


def test_substring_stage_cuts_repeated_spans(tmp_path):
    shared = " ".join(words(60, 555))
    docs = [("s0", good_doc(1) + "\n" + shared), ("s1", good_doc(2) + "\n" + shared)]
    inputs = [str(write_jsonl(tmp_path / "s.jsonl", docs))]
    prepare(inputs, tmp_path / "out", "dedup.substring.enabled=true", "dedup.minhash.enabled=false")
    st = json.loads((tmp_path / "out" / "report.json").read_text())["stages"]["substring_dedup"]
    assert st["docs_out"] == 2 and st["words_in"] - st["words_out"] == 60
