"""Predicted (llm/cost/memory.py) vs measured peak memory per rank under the real launcher, for a few layouts of
bench/bench_layout_memory.py's grid (the full grid and its results: bench/results_layout_memory.json).

Measured by tests/parallel/layout_memory_probe.py: the model states the engine holds (the ZeRO probe's
accounting) plus the CPU allocator's peak over a training step. Tolerance TOLERANCE on the worst rank."""
import json
import subprocess

import pytest

from tests.parallel.launcher_utils import ROOT, free_port, launch_env

PROBE = ROOT / "tests" / "parallel" / "layout_memory_probe.py"
TOLERANCE = 0.10
SUBSET = {2: ["small:1:1:0:0", "large:1:1:3:1", "long:1:1:0:1", "long:2:1:0:0", "long:1:2:1:0",
            "moe:1:1:1:0:2", "moe:1:1:3:0:2"],
          4: ["long:2:2:1:1"]}


@pytest.fixture(scope="module")
def worst(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout_memory")
    rows = []
    for world, layouts in SUBSET.items():
        out = root / f"world{world}.json"
        cmd = ["deepspeed", "--num_gpus", str(world), "--master_port", str(free_port()), str(PROBE), str(out),
               *layouts]
        proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=600,
                              start_new_session=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{(proc.stdout + proc.stderr)[-6000:]}"
        rows += json.loads(out.read_text())
    by_layout = {}
    for r in rows:
        if r["layout"] not in by_layout or r["measured_peak"] > by_layout[r["layout"]]["measured_peak"]:
            by_layout[r["layout"]] = r
    return by_layout


def test_predicted_peak_within_tolerance(worst):
    assert set(worst) == {x for layouts in SUBSET.values() for x in layouts}
    table = "\n".join(f"{k}: measured {r['measured_peak']:,} B, predicted {r['predicted']['tensors']:,} B"
                      for k, r in worst.items())
    for layout, r in worst.items():
        assert r["predicted"]["tensors"] == pytest.approx(r["measured_peak"], rel=TOLERANCE), f"{layout}\n{table}"


def test_measured_states_are_a_part_of_the_peak(worst):
    for r in worst.values():
        assert 0 < r["measured_states"] < r["measured_peak"]
