"""A job killed mid-way (os._exit after k completed units, as SIGKILL would) and re-run gives
byte-identical outputs to an uninterrupted run, for a kill in each sharded stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.shards import CRASH_ENV
from tests.data_pipeline.corpus import good_doc, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["tokenize.vocab_size=300", "tokenize.workers=2", "shards.docs_per_shard=4", "progress=false"]


def prepare(inputs, out, crash_after=None, extra=()):
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_after is not None:
        env[CRASH_ENV] = str(crash_after)
    cmd = [sys.executable, str(ROOT / "launch" / "prepare_data.py"), "--input", *inputs,
           "--output", str(out), *ARGS, *extra]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)


def outputs(out: Path) -> dict:
    """Every file outside work/ (the deliverables), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "work" not in p.relative_to(out).parts}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    docs = [(f"d{i}", good_doc(i, 120)) for i in range(10)] + [("dup", good_doc(2, 120))]
    inputs = [str(write_jsonl(tmp / "a.jsonl", docs[:6])), str(write_jsonl(tmp / "b.jsonl", docs[6:]))]
    done = prepare(inputs, tmp / "ref")
    assert done.returncode == 0, done.stderr
    return tmp, inputs, outputs(tmp / "ref")


# Units in order: 4 ingest shards, 15 dedup edge units (1 exact + 14 MinHash bands), the
# cluster step, then 4 token shards: 2 stops in ingest, 10 in dedup, 21 in tokenize.
@pytest.mark.parametrize("crash_after", [2, 10, 21])
def test_resume_after_kill_is_byte_identical(reference, crash_after):
    tmp, inputs, ref = reference
    out = tmp / f"crash{crash_after}"
    killed = prepare(inputs, out, crash_after)
    assert killed.returncode == 137, killed.stderr
    assert not (out / "data.bin").exists()
    resumed = prepare(inputs, out)
    assert resumed.returncode == 0, resumed.stderr
    got = outputs(out)
    assert sorted(got) == sorted(ref)
    for name in ref:
        assert got[name] == ref[name], name
    assert "dropped/dedup.jsonl" in got and b"duplicate_of" in got["dropped/dedup.jsonl"]


@pytest.mark.parametrize("crash_after", [1, 2])
def test_resume_counts_skipped_records_once(tmp_path, crash_after):
    """Malformed records skipped before a shard's first document (here the file's first line, and
    the first line of its second shard) are counted exactly once, resumed or not."""
    lines = [json.dumps({"id": f"d{i}", "text": good_doc(i, 120)}) for i in range(6)]
    lines[0:0], lines[4:4] = ["{broken"], ['{"text": null}']
    inputs = [str(tmp_path / "a.jsonl")]
    Path(inputs[0]).write_text("\n".join(lines) + "\n")
    skip = ["reader.on_error=skip"]
    assert prepare(inputs, tmp_path / "ref", extra=skip).returncode == 0
    ref = outputs(tmp_path / "ref")
    assert json.loads(ref["report.json"])["stages"]["read"]["dropped"] == {"read.malformed": 2}
    assert prepare(inputs, tmp_path / "crash", crash_after, skip).returncode == 137
    resumed = prepare(inputs, tmp_path / "crash", extra=skip)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(tmp_path / "crash") == ref
