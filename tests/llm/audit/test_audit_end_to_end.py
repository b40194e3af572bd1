"""End to end: prepare a tiny corpus with canaries, train a tiny model a few dozen debug-mode steps, audit it
with launch/audit.py; the JSON has the issue's layout and sane values (held-out canaries at chance)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llm.audit.exposure import CHANCE_BITS
from llm.config import load_config
from llm.train.debug import run_debug
from tests.conftest import tiny_config_dict
from tests.data_pipeline.corpus import good_doc, write_jsonl
from tests.data_pipeline.test_resume import prepare

ROOT = Path(__file__).resolve().parents[3]
CANARIES = ["canaries.enabled=true", "canaries.per_bucket=4", "canaries.repeats=[1,8]", "canaries.length=8",
            "canaries.secret_digits=4", "canaries.seed=3"]


def audit(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "audit.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    inputs = [str(write_jsonl(tmp / "a.jsonl", [(f"d{i}", good_doc(i, 150)) for i in range(24)]))]
    done = prepare(inputs, tmp / "data", extra=CANARIES)
    assert done.returncode == 0, done.stderr
    data = {"prefix": str(tmp / "data" / "data"), "tokenizer": str(tmp / "data" / "tokenizer.model")}
    cfg = tiny_config_dict(data, tmp / "run", train={"max_steps": 30, "eval_every": 0}, checkpoint={"every": 0})
    (tmp / "run.yaml").write_text(yaml.safe_dump(cfg))
    run_debug(load_config(tmp / "run.yaml"))
    return tmp


def test_audit_reports_every_bucket_with_held_out_canaries_at_chance(trained):
    out = trained / "audit.json"
    done = audit("--checkpoint", trained / "run", "--data", trained / "data", "--out", out, "--plot",
                 trained / "audit.png", "--candidates", 300, "--docs-per-bucket", 8, "--eval", trained / "a.jsonl")
    assert done.returncode == 0, done.stderr
    r = json.loads(out.read_text())
    assert set(r["buckets"]) == {"1", "8", "held_out"}
    for key, want in (("1", 8), ("8", 8), ("held_out", 16)):
        b = r["buckets"][key]
        assert b["canaries"] == want and set(b["kinds"]) == {"random", "secret"}
        assert 0.0 <= b["extraction_rate"] <= 1.0
        assert 0.0 <= b["exposure_sampled_mean"] <= math.log2(301)
    assert r["buckets"]["8"]["copies_in_train"] == 64 and r["buckets"]["held_out"]["copies_in_train"] == 0
    held = r["buckets"]["held_out"]
    assert abs(held["exposure_sampled_mean"] - CHANCE_BITS) < 1.0, held
    assert held["extraction_rate"] == 0.0
    assert len(r["canaries"]) == 32
    assert all(0.0 <= c["exposure"] <= r["exposure"]["space_bits"][c["kind"]] for c in r["canaries"])
    mem = r["memorization"]
    assert mem["k"] == 15 and mem["train"]["documents"] == 8 and mem["held_out"]["documents"] >= 1
    assert 0.0 <= mem["train"]["rate"] <= 1.0
    # Every eval example is a training document here (only the valid tail held some out): overlap near total.
    assert r["eval_overlap"]["eval_documents"] == 24 and r["eval_overlap"]["overlapping"] >= 20
    assert (trained / "audit.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/nowhere"], "is not a prepared data folder"),
    (["--checkpoint", "{tmp}/nowhere"], "is not a checkpoint directory"),
    (["--k", "40"], "exceed the model's seq_len=32"),
    (["--candidates", "0"], "--candidates=0 must be >= 1"),
])
def test_user_errors_are_one_line_and_exit_2(trained, args, message):
    base = {"--checkpoint": str(trained / "run"), "--data": str(trained / "data")}
    extra = []
    for flag, value in zip(args[::2], args[1::2]):
        if flag in base:
            base[flag] = value.format(tmp=trained)
        else:
            extra += [flag, value]
    done = audit(*[x for kv in base.items() for x in kv], *extra)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
