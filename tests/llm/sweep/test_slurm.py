"""llm/sweep/slurm.py in-process, against stand-in sbatch and squeue on PATH (the real cluster runs the whole sweep
in tests/launch/test_sweep.py): which points are submitted, how they are collected, and what a failure says."""
from __future__ import annotations

import json
import os
import stat

import pytest

from llm.sweep import RunFailed, UserError
from llm.sweep.rundir import marker
from llm.sweep.slurm import SWEEP_SBATCH, check_slurm, run_slurm

DOC = {"points": [{"name": f"p{i}", "seed": 0, "flops": 3e10, "n_params": 10_000 * (i + 1), "n_tokens": 500_000,
                   "tokens_trained": 500_000, "total_steps": 50} for i in range(3)]}


def _finish(out, name: str, loss: float = 4.0):
    point = next(p for p in DOC["points"] if p["name"] == name)
    marker(out, name).parent.mkdir(parents=True, exist_ok=True)
    marker(out, name).write_text(json.dumps({**point, "loss": loss}))


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """Stand-ins: sbatch records its arguments in sbatch.args and, as if the array had run, puts in place the done.json
    of each task `_ran` prepared; squeue says the job has left the queue. Returns the sweep directory."""
    bin_dir, out = tmp_path / "bin", tmp_path / "sweep"
    bin_dir.mkdir()
    out.mkdir()
    sbatch = (f'echo "$@" > {tmp_path}/sbatch.args\n'
              f'[ -f {tmp_path}/fail ] && {{ echo "sbatch: error: invalid partition" >&2; exit 1; }}\n'
              f'for f in {tmp_path}/ran/*; do\n'
              f'    [ -e "$f" ] && cp "$f" {out}/points/$(basename "$f")/done.json\n'
              'done\n'
              'echo "4242;cluster"\n')
    for name, script in (("sbatch", sbatch), ("squeue", "exit 0\n")):
        (bin_dir / name).write_text("#!/bin/sh\n" + script)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    (tmp_path / "ran").mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return out


def _ran(out, name: str, loss: float):
    """What array task `name` leaves behind: its done.json (the stand-in sbatch puts it in place)."""
    point = next(p for p in DOC["points"] if p["name"] == name)
    (out.parent / "ran" / name).write_text(json.dumps({**point, "loss": loss}))
    marker(out, name).parent.mkdir(parents=True, exist_ok=True)


def test_the_unfinished_points_are_one_array_and_are_collected(slurm, capsys):
    out = slurm
    _finish(out, "p0")
    _ran(out, "p1", 3.5)
    _ran(out, "p2", 3.25)
    run_slurm(out, DOC, ["--partition=cpu"], wait=True)
    said = capsys.readouterr().out.splitlines()
    argv = (out.parent / "sbatch.args").read_text().split()
    assert argv == ["--parsable", "--array=1,2", f"--output={out / 'slurm' / 'sweep-%A_%a.out'}", "--partition=cpu",
                    str(SWEEP_SBATCH), str(out.resolve())]
    assert said[0] == f"sweep: submitted job array 4242 with 2 tasks (logs {out / 'slurm'}/sweep-4242_<task>.out)"
    assert said[1].startswith("[2/3] p1: eval loss 3.5000; ETA ") and said[2].startswith("[3/3] p2: eval loss 3.2500")


def test_points_the_array_did_not_finish_are_named(slurm):
    out = slurm
    _ran(out, "p1", 3.5)
    with pytest.raises(RunFailed, match=r"job 4242 ended with 2 point\(s\) unfinished \(p0, p2\): see .*slurm; "
                                        "rerun to resubmit them"):
        run_slurm(out, DOC, [], wait=True)


def test_no_wait_submits_and_returns_and_nothing_left_submits_nothing(slurm, capsys):
    out = slurm
    run_slurm(out, DOC, [], wait=False)
    said = capsys.readouterr().out.splitlines()
    assert "--array=0,1,2" in (out.parent / "sbatch.args").read_text() and "--no-wait" in said[-1]
    (out.parent / "sbatch.args").unlink()
    for p in DOC["points"]:
        _finish(out, p["name"])
    run_slurm(out, DOC, [], wait=True)
    said += capsys.readouterr().out.splitlines()
    assert not (out.parent / "sbatch.args").exists()


def test_a_refused_submission_is_one_line(slurm):
    (slurm.parent / "fail").write_text("")
    with pytest.raises(UserError, match=r"sbatch failed: \['sbatch: error: invalid partition'\]"):
        run_slurm(slurm, DOC, ["--partition=nope"], wait=True)


def test_missing_commands_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="--slurm: sbatch and squeue not found"):
        check_slurm(wait=True)
    with pytest.raises(UserError, match="--slurm: sbatch not found"):
        check_slurm(wait=False)
