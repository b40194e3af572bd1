"""Readers: every format, configurable fields, malformed records (error naming file:line, or
skipped and counted), and streaming (a generator that has not read the whole file)."""

import gzip
import json

import pytest

from data_pipeline.readers import ReaderError, ReadStats, read_documents

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def _records(n=3):
    return [{"doc_id": f"d{i}", "body": f"text number {i}"} for i in range(n)]


def _write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def _ids_texts(docs):
    return [(d.id, d.text) for d in docs]


EXPECTED = [(f"d{i}", f"text number {i}") for i in range(3)]


def test_jsonl_plain_gz_zst_with_custom_fields(tmp_path):
    zstd = pytest.importorskip("zstandard")
    plain = _write_jsonl(tmp_path / "a.jsonl", _records())
    gz = _write_jsonl(tmp_path / "a.jsonl.gz", _records(), gzip.open)
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(zstd.ZstdCompressor().compress(plain.read_bytes()))
    for p in (plain, gz, zst):
        assert _ids_texts(read_documents(p, text_field="body", id_field="doc_id")) == EXPECTED


def test_missing_id_falls_back_to_file_and_line(tmp_path):
    p = _write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    assert next(iter(read_documents(p))).id == f"{p}:1"


@pytest.mark.parametrize("bad,message", [("{not json", "invalid JSON"), ('{"id": 1}', "'text' missing"),
                                         ("[1, 2]", "expected a JSON object")])
def test_malformed_line_raises_naming_file_and_line(tmp_path, bad, message):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "text": "ok"}\n\n' + bad + '\n{"id": "c", "text": "ok"}\n')
    docs = read_documents(p)
    next(docs)
    with pytest.raises(ReaderError, match=rf"{p}:3: .*{message}"):
        next(docs)


def test_malformed_lines_skipped_and_counted_when_configured(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "text": "ok"}\n{oops\n{"id": "c", "text": "ok"}\n{"text": 5}\n')
    stats = ReadStats()
    docs = list(read_documents(p, on_error="skip", stats=stats))
    assert [d.id for d in docs] == ["a", "c"]
    assert [d.index for d in docs] == [0, 2]  # positions stay stable across skipped lines
    assert stats.read == 2 and stats.skipped == 2
    assert stats.errors[0].startswith(f"{p}:2:") and stats.errors[1].startswith(f"{p}:4:")


def test_text_folder_one_document_per_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "sub" / "a.txt").write_text("ay")
    assert _ids_texts(read_documents(tmp_path)) == [("b.txt", "bee"), ("sub/a.txt", "ay")]


def test_parquet_reader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(_records()), p)
    assert _ids_texts(read_documents(p, text_field="body", id_field="doc_id")) == EXPECTED


def test_hf_save_to_disk_reader(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(_records()).save_to_disk(str(tmp_path / "ds"))
    assert _ids_texts(read_documents(tmp_path / "ds", text_field="body", id_field="doc_id")) == EXPECTED


def test_streaming_reads_lazily(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text('{"id": "a", "text": "ok"}\n' + "{broken\n" * 1000)
    docs = read_documents(p)
    assert next(docs).id == "a"  # the broken tail has not been touched yet
