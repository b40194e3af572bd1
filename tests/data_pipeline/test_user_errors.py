"""Issue 10: every user mistake in data preparation ends in one line on stderr and exit status 2,
never a traceback, a silently wrong result or lost data. The table runs launch/prepare_data.py as
a user would (a subprocess); the unit tests below pin the messages and counts the table relies on."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_pipeline.readers import ReaderError, ReadStats, read_documents
from tests.data_pipeline.corpus import good_doc, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["tokenize.vocab_size=300", "tokenize.workers=1", "shards.docs_per_shard=4"]


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """Every bad input of the table, next to one good file."""
    d = tmp_path_factory.mktemp("bad")
    good = write_jsonl(d / "good.jsonl", [(f"d{i}", good_doc(i, 120)) for i in range(10)])
    lines = good.read_bytes().splitlines(keepends=True)
    (d / "latin1.jsonl").write_bytes(b"".join(lines[:3]) + b'{"text": "caf\xe9"}\n' + b"".join(lines[3:]))
    (d / "binary.jsonl").write_bytes(lines[0] + bytes(range(128, 256)) + b"\n" + b"".join(lines[1:]))
    gz = gzip.compress(good.read_bytes())
    (d / "cut.jsonl.gz").write_bytes(gz[:len(gz) * 2 // 3])
    # One zstd block per line (as a streaming writer flushing often makes), so that a cut file
    # still holds complete lines before the cut.
    zobj = zstandard.ZstdCompressor().compressobj()
    zs = b"".join(zobj.compress(line) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for line in lines)
    (d / "cut.jsonl.zst").write_bytes(zs[:len(zs) * 2 // 3])
    (d / "plain.jsonl.gz").write_bytes(good.read_bytes())
    (d / "empty.jsonl").write_bytes(b"")
    (d / "blank.jsonl").write_text("\n  \n\n")
    (d / "body.jsonl").write_text("".join(json.dumps({"body": good_doc(i)}) + "\n" for i in range(3)))
    (d / "arrays.jsonl").write_text("[1, 2]\n")
    (d / "numbers.jsonl").write_text("3\n")
    (d / "null.jsonl").write_text('{"text": null}\n')
    (d / "int.jsonl").write_text('{"text": 7}\n')
    (d / "surrogate.jsonl").write_text('{"text": "a \\ud800 b"}\n')
    (d / "array.json").write_text('[\n {"text": "a"}\n]\n')
    (d / "huge.jsonl").write_text(json.dumps({"text": "word " * 2_000_000}) + "\n")
    (d / "bad.parquet").write_text("not parquet\n")
    pq.write_table(pa.table({"body": ["x"]}), d / "body.parquet")
    (d / "notes.csv").write_text("a,b\n")
    (d / "emptydir").mkdir()
    (d / "mddir").mkdir()
    (d / "mddir" / "a.md").write_text("# not a .txt")
    (d / "txtdir").mkdir()
    (d / "txtdir" / "a.txt").write_text(good_doc(1))
    (d / "broken_hf").mkdir()
    (d / "broken_hf" / "dataset_info.json").write_text("{}")
    (d / "bad.yaml").write_text("dedup: [unclosed\n")
    (d / "list.yaml").write_text("- a\n")
    (d / "a_file").write_text("x")
    (d / "not.model").write_text("not a sentencepiece model")
    (d / "eval_bad.jsonl").write_text("{nope\n")
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("someone else's")
    return d


def _run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "prepare_data.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def _io(inp: str, out: str = "out", *extra: str) -> list[str]:
    return ["--input", inp, "--output", out, *SMALL, *extra]


# (case, argv with {d} for the inputs folder, words the one line must hold)
CASES = [
    ("missing input", _io("{d}/nope.jsonl", "{d}/o1"), "input {d}/nope.jsonl does not exist"),
    ("no --input", ["--output", "{d}/o2"], "inputs is empty"),
    ("no --output", ["--input", "{d}/good.jsonl"], "output is empty"),
    ("empty folder", _io("{d}/emptydir", "{d}/o3"), "folder with no .txt file"),
    ("folder without .txt", _io("{d}/mddir", "{d}/o4"), "folder with no .txt file"),
    ("non-UTF-8 line", _io("{d}/latin1.jsonl", "{d}/o5"), "{d}/latin1.jsonl:4: not UTF-8 (byte 0xe9"),
    ("binary garbage", _io("{d}/binary.jsonl", "{d}/o6"), "{d}/binary.jsonl:2: not UTF-8 (byte 0x80 at column 1)"),
    ("truncated .gz", _io("{d}/cut.jsonl.gz", "{d}/o7"), "{d}/cut.jsonl.gz: compressed data ends early"),
    ("truncated .zst", _io("{d}/cut.jsonl.zst", "{d}/o8"), "{d}/cut.jsonl.zst: compressed data ends early"),
    ("plain text named .gz", _io("{d}/plain.jsonl.gz", "{d}/o9"), "Not a gzipped file"),
    ("empty file", _io("{d}/empty.jsonl", "{d}/o10"), "{d}/empty.jsonl is an empty file"),
    ("only blank lines", _io("{d}/blank.jsonl", "{d}/o11"), "{d}/blank.jsonl holds no document"),
    ("no text field", _io("{d}/body.jsonl", "{d}/o12"), "field 'text' missing (keys: ['body'])"),
    ("no text field, skip", _io("{d}/body.jsonl", "{d}/o13", "reader.on_error=skip"),
     "all 3 records are malformed and were skipped"),
    ("other text_field missing", _io("{d}/good.jsonl", "{d}/o14", "reader.text_field=body"), "field 'body' missing"),
    ("lines are JSON arrays", _io("{d}/arrays.jsonl", "{d}/o15"), "arrays.jsonl:1: expected a JSON object, got list"),
    ("lines are numbers", _io("{d}/numbers.jsonl", "{d}/o16"), "expected a JSON object, got int"),
    ("text is null", _io("{d}/null.jsonl", "{d}/o17"), "null.jsonl:1: field 'text' is null, not a string"),
    ("text is a number", _io("{d}/int.jsonl", "{d}/o18"), "field 'text' is int, not a string"),
    ("lone surrogate", _io("{d}/surrogate.jsonl", "{d}/o19"), "unpaired UTF-16 surrogate (\\ud800)"),
    ("a JSON array file", _io("{d}/array.json", "{d}/o20"), "array.json:1: invalid JSON"),
    ("huge single line", _io("{d}/huge.jsonl", "{d}/o21"), "no document survived: of 1 read, dropped "
     "gopher_quality.too_many_words=1"),
    ("not parquet", _io("{d}/bad.parquet", "{d}/o22"), "{d}/bad.parquet: not a readable parquet file"),
    ("parquet without text", _io("{d}/body.parquet", "{d}/o23"), "no column 'text' (columns: ['body'])"),
    ("jsonl read as parquet", _io("{d}/good.jsonl", "{d}/o24", "reader.format=parquet"), "not a readable parquet"),
    ("unknown suffix", _io("{d}/notes.csv", "{d}/o25"), "cannot tell the format from the name"),
    ("broken save_to_disk folder", _io("{d}/broken_hf", "{d}/o26"), "not a readable datasets save_to_disk folder"),
    ("bad YAML", ["--config", "{d}/bad.yaml", *_io("{d}/good.jsonl", "{d}/o27")], "bad.yaml is not valid YAML"),
    ("YAML not a mapping", ["--config", "{d}/list.yaml", *_io("{d}/good.jsonl", "{d}/o28")], "must be a mapping"),
    ("missing config", ["--config", "{d}/none.yaml", *_io("{d}/good.jsonl", "{d}/o29")], "does not exist"),
    ("unknown key", _io("{d}/good.jsonl", "{d}/o30", "dedup.minhash.band=3"), "did you mean 'dedup.minhash.bands'"),
    ("override without =", _io("{d}/good.jsonl", "{d}/o31", "dedup.minhash.bands"), "must look like key.sub=value"),
    ("bands=0", _io("{d}/good.jsonl", "{d}/o32", "dedup.minhash.bands=0"), "dedup.minhash.bands=0 must be >= 1"),
    ("vocab_size=10", _io("{d}/good.jsonl", "{d}/o33", "tokenize.vocab_size=10"),
     "tokenize.vocab_size=10 must be >= 261"),
    ("negative threshold", _io("{d}/good.jsonl", "{d}/o34", "filters.fineweb.max_short_line_ratio=-0.5"),
     "filters.fineweb.max_short_line_ratio=-0.5 must be >= 0"),
    ("minimum fraction above 1", _io("{d}/good.jsonl", "{d}/o35", "filters.gopher_quality.min_alpha_words_ratio=2"),
     "is a fraction and must be <= 1"),
    ("min above max", _io("{d}/good.jsonl", "{d}/o36", "filters.gopher_quality.max_words=40"),
     "min_words=50 is above filters.gopher_quality.max_words=40"),
    ("filters drop everything", _io("{d}/good.jsonl", "{d}/o49", "filters.gopher_quality.min_words=900"),
     "no document survived: of 10 read, dropped gopher_quality.too_few_words=10"),
    ("number as text", _io("{d}/good.jsonl", "{d}/o37", "filters.gopher_quality.min_words=many"), "must be an integer"),
    ("bad model_type", _io("{d}/good.jsonl", "{d}/o38", "tokenize.model_type=xyz"), "tokenize.model_type='xyz'"),
    ("negative workers", _io("{d}/good.jsonl", "{d}/o39", "tokenize.workers=-1"), "tokenize.workers=-1 must be >= 0"),
    ("bad on_error", _io("{d}/good.jsonl", "{d}/o40", "reader.on_error=ignore"), "must be 'raise' or 'skip'"),
    ("task index out of range", _io("{d}/good.jsonl", "{d}/o41", "shards.task_index=2", "shards.task_count=2"),
     "shards.task_index=2 must be in [0, shards.task_count=2)"),
    ("corpus too small for vocab", _io("{d}/good.jsonl", "{d}/o42", "tokenize.vocab_size=4096"),
     "Vocabulary size too high (4096)"),
    ("tokenizer not a model", _io("{d}/good.jsonl", "{d}/o43", "--tokenizer", "{d}/not.model"),
     "is not a SentencePiece model"),
    ("missing eval set", _io("{d}/good.jsonl", "{d}/o44", "decontaminate.eval_paths=[{d}/nope.jsonl]"),
     "decontaminate.eval_paths entry {d}/nope.jsonl does not exist"),
    ("malformed eval set", _io("{d}/good.jsonl", "{d}/o45", "decontaminate.eval_paths=[{d}/eval_bad.jsonl]"),
     "eval_bad.jsonl:1: invalid JSON"),
    ("output is a file", _io("{d}/good.jsonl", "{d}/a_file"), "output {d}/a_file is a file"),
    ("output under a file", _io("{d}/good.jsonl", "{d}/a_file/sub"), "{d}/a_file is a file"),
    ("output inside an input folder", _io("{d}/txtdir", "{d}/txtdir/out"), "is inside input {d}/txtdir"),
    ("output a foreign folder", _io("{d}/good.jsonl", "{d}/foreign"), "not prepared by this pipeline"),
    ("input given twice", ["--input", "{d}/good.jsonl", "{d}/good.jsonl", "--output", "{d}/o46", *SMALL],
     "input {d}/good.jsonl is given twice"),
    ("file inside a folder input", ["--input", "{d}/txtdir", "{d}/txtdir/a.txt", "--output", "{d}/o47", *SMALL],
     "is inside input folder {d}/txtdir"),
    ("stage before its predecessor", _io("{d}/good.jsonl", "{d}/o48", "--stage", "cluster"),
     "this is the only task and"),
    ("blend: missing dataset", ["blend", "--paths", "{d}/nope/data", "--weights", "1"], "{d}/nope/data.bin not found"),
    ("blend: weights mismatch", ["blend", "--paths", "{d}/nope/data", "--weights", "1", "2"],
     "--weights has 2 values for 1 --paths"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_and_exit_2(d, argv, expected):
    done = _run([a.format(d=d) for a in argv])
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected.format(d=d) in lines[0], lines[0]


def test_changed_config_names_the_key_and_slurm_index_is_checked(d, tmp_path):
    assert _run(_io(str(d / "good.jsonl"), str(tmp_path / "o"))).returncode == 0
    again = _run(_io(str(d / "good.jsonl"), str(tmp_path / "o"), "dedup.minhash.rows=4"))
    assert again.returncode == 2 and "(dedup.minhash.rows differs)" in again.stderr, again.stderr
    slurm = _run(_io(str(d / "good.jsonl"), str(tmp_path / "o2")), {"SLURM_ARRAY_TASK_ID": "5",
                                                                   "SLURM_ARRAY_TASK_COUNT": "2"})
    assert slurm.returncode == 2 and slurm.stderr.startswith("error: task index 5 is outside [0, 2)")


def test_skip_counts_every_bad_line_including_the_first(d, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = (d / "good.jsonl").read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"\xff\xfe\n" + b"".join(good[:5]) + b'{"text": null}\n' + b"".join(good[5:]) + b"[1]\n")
    done = _run(_io(str(bad), str(tmp_path / "o"), "reader.on_error=skip"))
    assert done.returncode == 0, done.stderr
    read = json.loads((tmp_path / "o" / "report.json").read_text())["stages"]["read"]
    assert read["docs_in"] == 13 and read["docs_out"] == 10 and read["dropped"] == {"read.malformed": 3}
    dropped = [json.loads(line) for f in (tmp_path / "o" / "dropped").glob("shard_*.jsonl")
               for line in f.read_text().splitlines()]
    assert sorted(r["id"] for r in dropped) == [f"{bad}:1", f"{bad}:13", f"{bad}:7"]


def test_non_utf8_lines_raise_or_are_skipped(d):
    with pytest.raises(ReaderError, match=r"latin1.jsonl:4: not UTF-8 \(byte 0xe9 at column 14\)"):
        list(read_documents(d / "latin1.jsonl"))
    stats = ReadStats()
    docs = list(read_documents(d / "binary.jsonl", on_error="skip", stats=stats))
    assert len(docs) == 10 and stats.skipped == 1 and [x.index for x in docs[:2]] == [0, 2]


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.jsonl.zst"])
def test_truncated_archive_names_its_last_complete_line(d, name):
    docs = read_documents(d / name)
    got = []
    with pytest.raises(ReaderError, match=rf"{name}: compressed data ends early \(truncated file\?\); "
                                          r"the last complete line is (\d+)") as err:
        got.extend(docs)
    assert str(len(got)) in str(err.value).rsplit(" ", 1)[-1]
    assert 0 < len(got) < 10 and got[0].text == good_doc(0, 120)


def test_zstd_with_several_frames_reads_them_all(tmp_path):
    docs = [(f"d{i}", f"text {i}") for i in range(4)]
    plain = write_jsonl(tmp_path / "a.jsonl", docs).read_bytes().splitlines(keepends=True)
    cctx = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(cctx.compress(b"".join(plain[:3])) + cctx.compress(b"".join(plain[3:])))
    assert [x.id for x in read_documents(tmp_path / "a.jsonl.zst")] == ["d0", "d1", "d2", "d3"]


def test_byte_order_mark_is_allowed(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\r\n')
    assert [(x.id, x.text) for x in read_documents(p)] == [("a", "x"), ("b", "y")]
