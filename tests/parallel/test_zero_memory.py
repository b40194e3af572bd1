"""Per-rank bytes of parameters, gradients and optimizer state under ZeRO 0-3 at DP2 and DP4, measured on real
DeepSpeed engines (tests/parallel/zero_memory_probe.py under the launcher) against the ZeRO paper's formulas.

Tolerances. Against the DeepSpeed-adjusted formula (`deepspeed_zero_bytes`): exact, to the byte; it models the
flat-buffer padding, whole-parameter gradient partitions and Adam's step counters (llm/cost/zero.py says
why each exists). Against the paper (`paper_zero_bytes`), between micro-batches of an accumulation: parameters
and optimizer state within 0.1% (padding: a few elements; step counters: 4 B per tensor); gradients within
GRAD_REL_TOL above, because ZeRO-2 keeps the gradients of every parameter overlapping its partition whole, so
a rank whose partition edge cuts a large matrix holds up to that matrix more (at DP4 rank 2 holds 1.24× its
share here); totals within TOTAL_REL_TOL. At the boundary ZeRO-1's gradients are partitioned like ZeRO-2's
(not 2Ψ): the one place DeepSpeed holds less than the paper. Communication buckets are reported, not compared.
"""
import json
import subprocess
import sys

import pytest

from llm.cost.zero import ZeroBytes, deepspeed_zero_bytes, paper_zero_bytes, zero12_partition_numels
from parallel.memory import format_table
from tests.parallel.launcher_utils import ROOT, free_port, launch_env

PROBE = ROOT / "tests" / "parallel" / "zero_memory_probe.py"
STATE_REL_TOL = 1e-3
GRAD_REL_TOL = 0.25
TOTAL_REL_TOL = 0.03
CATEGORIES = ("params", "grads", "optimizer")


# --- the formulas (pure) ------------------------------------------------------------------------------------

def test_paper_figure1_golden_values():
    # Rajbhandari et al. 2019, Figure 1: Ψ = 7.5B, N_d = 64, K = 12 → 120, 31.4, 16.6, 1.9 GB per device.
    got = [paper_zero_bytes(7_500_000_000, 64, s).total / 1e9 for s in range(4)]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]


def test_paper_formulas_by_category():
    psi, n = 1000, 4
    assert paper_zero_bytes(psi, n, 0) == ZeroBytes(2 * psi, 2 * psi, 12 * psi)
    assert paper_zero_bytes(psi, n, 1) == ZeroBytes(2 * psi, 2 * psi, 12 * psi // n)
    assert paper_zero_bytes(psi, n, 2) == ZeroBytes(2 * psi, 2 * psi // n, 12 * psi // n)
    assert paper_zero_bytes(psi, n, 3) == ZeroBytes(2 * psi // n, 2 * psi // n, 12 * psi // n)
    with pytest.raises(ValueError):
        paper_zero_bytes(psi, n, 4)


def test_zero12_partitions_cover_whole_parameters():
    # Group of 3 tensors (10, 6, 4) at dp=2: padded to a multiple of 4 → 20, partitions [0,10) and [10,20).
    assert zero12_partition_numels([[10, 6, 4]], dp=2, dp_rank=0) == [(20, 10, 10)]
    assert zero12_partition_numels([[10, 6, 4]], dp=2, dp_rank=1) == [(20, 10, 10)]
    # (7, 7, 6) → rank 0 owns [0,10): 7 and the 7 it starts; rank 1 owns [10,20): the 7 it ends in, and 6.
    assert zero12_partition_numels([[7, 7, 6]], dp=2, dp_rank=0) == [(20, 10, 14)]
    assert zero12_partition_numels([[7, 7, 6]], dp=2, dp_rank=1) == [(20, 10, 13)]


def test_deepspeed_formula_is_the_paper_plus_bookkeeping():
    groups = [[64, 64], [4, 4]]  # divisible by every alignment: no padding, partitions cut between parameters
    for stage in range(4):
        ds = deepspeed_zero_bytes(groups, 2, stage, at_boundary=False)
        paper = paper_zero_bytes(136, 2, stage)
        assert (ds.params, ds.grads) == (paper.params, paper.grads)
        assert 0 < ds.optimizer - paper.optimizer <= 4 * 4  # Adam's 4-byte step tensors
    assert deepspeed_zero_bytes(groups, 2, 1, at_boundary=True).grads == 136  # 2Ψ/N_d, like ZeRO-2


# --- measured on DeepSpeed engines --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero_memory")
    rows = []
    for dp in (2, 4):
        out = root / f"dp{dp}.json"
        cmd = ["deepspeed", "--num_gpus", str(dp), "--master_port", str(free_port()), str(PROBE), str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=600,
                              start_new_session=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{(proc.stdout + proc.stderr)[-6000:]}"
        rows += json.loads(out.read_text())
    table = format_table([r for r in rows if r["rank"] == 0])
    print("\n" + table, file=sys.stderr)
    return rows, table


def test_every_rank_holds_exactly_the_deepspeed_formula(measured):
    rows, table = measured
    assert {(r["dp"], r["zero_stage"]) for r in rows} == {(dp, s) for dp in (2, 4) for s in range(4)}
    for r in rows:
        for k in CATEGORIES:
            assert r["measured"][k] == r["deepspeed"][k], (
                f"dp={r['dp']} zero={r['zero_stage']} rank={r['rank']} {r['point']} {k}: measured "
                f"{r['measured'][k]} B, formula {r['deepspeed'][k]} B\n{table}")


def test_between_micro_batches_matches_the_paper(measured):
    rows, table = measured
    tolerance = {"params": STATE_REL_TOL, "grads": GRAD_REL_TOL, "optimizer": STATE_REL_TOL, "total": TOTAL_REL_TOL}
    for r in rows:
        if r["point"] != "accumulating":
            continue
        for k, tol in tolerance.items():
            m, p = r["measured"][k], r["paper"][k]
            assert p <= m <= p * (1 + tol), (
                f"dp={r['dp']} zero={r['zero_stage']} rank={r['rank']} {k}: measured {m} B, paper {p} B\n{table}")


def test_zero1_gradients_are_partitioned_at_the_boundary(measured):
    rows, table = measured
    zero2 = {(r["dp"], r["rank"]): r["measured"]["grads"] for r in rows if r["zero_stage"] == 2}
    for r in rows:
        if r["zero_stage"] == 1 and r["point"] == "boundary":
            assert r["measured"]["grads"] == zero2[(r["dp"], r["rank"])] < r["paper"]["grads"], table


def test_each_stage_partitions_what_the_paper_says(measured):
    rows, table = measured
    # Stage k+1 partitions one more category than stage k (1: optimizer state, 2: gradients, 3: parameters),
    # so per rank it holds strictly less of that category and in total.
    partitioned = {1: "optimizer", 2: "grads", 3: "params"}
    for dp in (2, 4):
        for rank in range(dp):
            by_stage = {r["zero_stage"]: r["measured"] for r in rows
                        if r["dp"] == dp and r["rank"] == rank and r["point"] == "accumulating"}
            for stage, category in partitioned.items():
                before, after = by_stage[stage - 1], by_stage[stage]
                assert after[category] < before[category], f"dp={dp} zero {stage - 1}→{stage} {category}\n{table}"
                assert after["total"] < before["total"], f"dp={dp} zero {stage - 1}→{stage} total\n{table}"
