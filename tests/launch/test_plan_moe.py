"""launch/plan.py --moe end to end: the table, --json with a layout, and its one-line refusals."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_moe_table_and_json_with_a_layout():
    out = run("--flops", "1e20", "--moe")
    assert out.returncode == 0, out.stderr
    assert "experts" in out.stdout and "dense alternative" in out.stdout
    out = run("--flops", "1e20", "--moe", "--gpus", "64", "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    assert spec["model"]["moe"]["top_k"] == spec["granularity"]
    assert spec["memory_per_gpu"]["experts"] > 0 and spec["layout"]["tp"] == spec["layout"]["pp"] == 1
    assert spec["n_params"] > spec["n_params_active"] and spec["dense"]["n_params"] > 0


@pytest.mark.parametrize("extra", [["--approach", "3"], ["--write-config", "x.yaml"]])
def test_refusals_are_one_line(extra):
    out = run("--flops", "1e20", "--moe", *extra)
    assert out.returncode == 2 and "--moe does not combine" in out.stderr and len(out.stderr.strip().splitlines()) == 1
