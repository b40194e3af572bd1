"""launch/sweep.py end to end on the tiny dataset: a real two-budget, three-size sweep (seconds per point), then resume,
fit, picture, report and plan.py --law; and the same sweep as a job array on the local SLURM cluster.

At these budgets (3e10 and 6e10 FLOPs) the compute-optimal N is far below the smallest shape the designer builds, so
the real runs' losses rise with N and no budget has a minimum inside its sizes: the sweep must say so in one line and
still write its report and picture. To test the fit through the command line, the finished points' losses are
then replaced by those of a known law (plus noise) whose optimum lies inside the sizes run, and the rerun must skip
every run, re-fit, recover the law's exponent and hand plan.py a law that says where it came from.

Real runs (the first sweep, a rerun that trains a lost point, a killed sweep, the SLURM array) spawn
launch/sweep.py as a user would; everything that trains nothing (refusals, --fit-only, the re-fit) calls its
main() in-process. The package's parts have their own tests in tests/llm/sweep/.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from launch import cli
from llm.scaling.plan import DEEPSEEK_2024_LR
from llm.scaling.laws import ParametricLaw
from llm.shape import count_params
from llm.config import ModelConfig
from launch.sweep import main as sweep_main
from tests.launch.test_slurm import cluster, needs_cluster  # noqa: F401  (the local cluster fixture)
from tests.parallel.launcher_utils import launch_env, launcher_config_dict, write_config


ROOT = Path(__file__).resolve().parents[2]
SWEEP, PLAN = ROOT / "launch" / "sweep.py", ROOT / "launch" / "plan.py"
ARGS = ["--budgets", "3e10", "6e10", "--sizes-per-budget", "3", "--spread", "0.25", "--bootstrap", "100",
        "--eval-tokens", "8192"]
KNOWN = ParametricLaw("known", E=1.5, A=500.0, B=100.0, alpha=0.35, beta=0.35)  # a = 0.5; N_opt(3e10) ≈ 0.7M


def sweep(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, str(SWEEP), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or launch_env(), timeout=timeout)


def sweep_here(capsys, *args) -> subprocess.CompletedProcess:
    """launch/sweep.py's main() in this process, for what trains nothing: its status, stdout and stderr, as sweep()
    returns them (an argparse error is its SystemExit status)."""
    capsys.readouterr()
    try:
        rc = cli.call(sweep_main, [str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["launch/sweep.py", *args], rc, out, err)


@pytest.fixture(scope="module")
def base(tiny_data, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep_base")
    # Micro-batches up to 64: the points' global batches (16-32 here) then run without accumulation.
    return write_config(d / "base.yaml", launcher_config_dict(tiny_data, d / "unused",
                                                              train={"global_batch_size": 64, "micro_batch_size": 64}))


@pytest.fixture(scope="module")
def swept(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    proc = sweep(*ARGS, "--config", str(base), "--out", str(out))
    return out, proc


def _points(out: Path) -> list[dict]:
    return json.loads((out / "sweep.json").read_text())["points"]


def test_sweep_writes_configs_runs_every_point_and_says_why_no_law(swept):
    out, proc = swept
    points = _points(out)
    assert len(points) == 6 and "shifted up" in proc.stdout  # the stated handling of an unbuildable optimum
    assert sum(f"[{i}/6]" in proc.stdout for i in range(1, 7)) == 6 and "ETA" in proc.stdout
    for p in points:
        cfg = yaml.safe_load((out / "points" / p["name"] / "config.yaml").read_text())
        model = ModelConfig(**cfg["model"])
        assert count_params(model) == p["n_params"]
        # The cosine schedule ends at the point's own D = C / 6N; LR from plan.py's rule at the budget.
        assert cfg["train"]["tokens"] == p["n_tokens"] == int(p["flops"] // (6 * p["n_params"]))
        assert cfg["optim"]["lr"] == pytest.approx(DEEPSEEK_2024_LR[0] * p["flops"] ** DEEPSEEK_2024_LR[1], rel=1e-3)
        # Every point evaluates the whole validation split, distinct samples, in global batches; no accumulation
        # the base config did not ask for.
        g = cfg["train"]["global_batch_size"]
        valid = json.loads((out / "sweep.json").read_text())["data"]["valid_samples"]
        want = min(valid, 8192 // cfg["model"]["seq_len"])  # --eval-tokens 8192, or all of a smaller split
        assert valid > 8192 // cfg["model"]["seq_len"] and cfg["train"]["eval_batches"] == want // g
        assert p["eval_samples"] == cfg["train"]["eval_batches"] * g
        assert g % cfg["train"]["micro_batch_size"] == 0
        done = json.loads((out / "points" / p["name"] / "done.json").read_text())
        rows = [json.loads(x) for x in (out / "points" / p["name"] / "run" / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in rows if "eval_loss" in r][-1]
        assert last["step"] == p["total_steps"] and done["loss"] == last["eval_loss"]
        assert math.isfinite(done["loss"]) and 2 < done["loss"] < 8
    if proc.returncode == 0:  # a minimum inside both budgets' sizes after all: then it was fitted
        assert (out / "law.json").is_file()
    else:
        assert proc.returncode == 1, proc.stderr
        err = proc.stderr.strip()
        assert "\n" not in err and "minimum inside the sizes run" in err
        assert not (out / "law.json").exists()
    assert (out / "report.md").is_file() and (out / "isoflop.png").is_file()


def test_rerun_skips_finished_points_and_reruns_unfinished_ones(swept, base):
    out, _ = swept
    points = _points(out)
    lost, killed = points[1]["name"], points[4]["name"]  # no marker at all / run finished but marker not written
    mtimes = {p["name"]: (out / "points" / p["name"] / "run" / "metrics.jsonl").stat().st_mtime_ns for p in points}
    markers = {p["name"]: (out / "points" / p["name"] / "done.json").stat().st_mtime_ns for p in points}
    import shutil
    shutil.rmtree(out / "points" / lost / "run")
    (out / "points" / lost / "done.json").unlink()
    (out / "points" / killed / "done.json").unlink()
    proc = sweep(*ARGS, "--config", str(base), "--out", str(out))
    assert proc.returncode in (0, 1), proc.stderr
    assert "4/6 points already finished" in proc.stdout
    assert f"{lost}: N=" in proc.stdout and f"{killed}: run had finished, collected" in proc.stdout
    assert proc.stdout.count(": N=") == 1  # only the lost point trained again
    for p in points:
        name = p["name"]
        assert (out / "points" / name / "done.json").is_file()
        if name != lost:
            assert (out / "points" / name / "run" / "metrics.jsonl").stat().st_mtime_ns == mtimes[name]
        if name not in (lost, killed):
            assert (out / "points" / name / "done.json").stat().st_mtime_ns == markers[name]


def test_fit_picture_report_and_plan_with_the_sweeps_law(swept, base, capsys):
    out, _ = swept
    rng = np.random.default_rng(0)
    metrics = {}
    for p in _points(out):
        path = out / "points" / p["name"] / "done.json"
        done = json.loads(path.read_text())
        done["loss"] = KNOWN.loss(p["n_params"], p["n_tokens"]) * (1 + 1e-3 * rng.standard_normal())
        path.write_text(json.dumps(done))
        metrics[p["name"]] = (out / "points" / p["name"] / "run" / "metrics.jsonl").stat().st_mtime_ns
    proc = sweep_here(capsys, *ARGS, "--config", base, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "6/6 points already finished" in proc.stdout and ": N=" not in proc.stdout
    assert all((out / "points" / n / "run" / "metrics.jsonl").stat().st_mtime_ns == t for n, t in metrics.items())
    law = json.loads((out / "law.json").read_text())
    assert law["n_opt"]["a"] == pytest.approx(KNOWN.a, abs=0.05)
    for b in law["budgets"]:
        assert b["vertex_inside"] and b["n_opt"] == pytest.approx(KNOWN.optimal(b["flops"])[0], rel=0.25)
        assert {"c0", "c1", "c2"} <= set(b["parabola"]) and b["loss_opt"] > 0
    assert law["parametric"]["skipped"]  # six runs: too few for five constants
    assert law["sweep"]["shapes"] == "standard"  # what plan.py --law designs its shape under

    import matplotlib.image
    png = matplotlib.image.imread(out / "isoflop.png")
    assert png.shape[:2] == (650, 1700) and png[..., :3].std() > 0.05  # two panels drawn, not a blank canvas
    report = (out / "report.md").read_text()
    assert f"a = {law['n_opt']['a']:.3f}" in report and "Muennighoff" in report and "epochs" in report
    assert "shifted up" in report

    plan = subprocess.run([sys.executable, str(PLAN), "--law", str(out / "law.json"), "--flops", "1e12",
                           "--vocab-size", "512", "--seq-len", "32", "--tp-degrees", "1", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert plan.returncode == 0, plan.stderr
    spec = json.loads(plan.stdout)
    assert spec["law"] == f"sweep:{out / 'law.json'}"
    assert spec["n_params_target"] == pytest.approx(law["n_opt"]["k"] * 1e12 ** law["n_opt"]["a"])
    assert "bootstrap" in spec["law_note"] and "extrapolated" in spec["law_note"] and spec["shape_rules"] == "standard"
    table = subprocess.run([sys.executable, str(PLAN), "--law", str(out / "law.json"), "--flops", "1e12",
                            "--vocab-size", "512", "--seq-len", "32", "--tp-degrees", "1"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "law interval" in table.stdout and f"a = {law['n_opt']['a']:.3f}" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--budgets", "1e12", "-3e12"], "must be positive"),
    (["--budgets", "1e6", "3e6"], "buys only"),
    (["--budgets", "1e8", "3e8"], "optimizer steps"),
    (["--budgets", "1e11", "3e11", "--sizes-per-budget", "2"], "at least 3 sizes"),
    (["--budgets", "1e11"], "at least two"),
    (["--budgets", "1e11", "3e11", "--law", "nowhere/law.json"], "no such file"),
])
def test_bad_arguments_are_one_line_errors(base, tmp_path, args, message, capsys):
    proc = sweep_here(capsys, *args, "--config", base, "--out", tmp_path / "s")
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_another_sweeps_directory_is_refused(swept, base, capsys):
    out, _ = swept
    proc = sweep_here(capsys, "--budgets", "3e10", "9e10", "--sizes-per-budget", "3", "--spread", "0.25", "--config",
                      base, "--out", out)
    assert proc.returncode == 2 and "holds another sweep" in proc.stderr


def test_small_shapes_are_designed_and_recorded(base, tmp_path, capsys):
    """--shapes small (CPU-scale shapes): the points' configs carry 32-wide heads; --fit-only trains nothing, and
    the same directory under other rules is another sweep."""
    out = tmp_path / "s"
    proc = sweep_here(capsys, "--budgets", "1e11", "3e11", "--sizes-per-budget", "3", "--shapes", "small", "--config",
                      base, "--out", out, "--fit-only")
    assert proc.returncode == 1 and "has finished yet" in proc.stderr, proc.stderr  # nothing has run yet
    assert len(proc.stderr.strip().splitlines()) == 1
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["args"]["shapes"] == "small" and len(doc["points"]) == 6
    for p in doc["points"]:
        cfg = yaml.safe_load((out / "points" / p["name"] / "config.yaml").read_text())
        assert cfg["model"]["head_dim"] == 32 and cfg["model"]["d_model"] % 32 == 0
        # The default --eval-tokens (2^20) exceeds this validation split: all of it, in whole global batches.
        g = cfg["train"]["global_batch_size"]
        assert cfg["train"]["eval_batches"] == doc["data"]["valid_samples"] // g == p["eval_samples"] // g
        assert not (out / "points" / p["name"] / "done.json").exists()
    again = sweep_here(capsys, "--budgets", "1e11", "3e11", "--sizes-per-budget", "3", "--config", base, "--out", out,
                       "--fit-only")
    assert again.returncode == 2 and "holds another sweep" in again.stderr


def test_seeds_train_each_size_several_times_and_the_fit_takes_every_run(base, tmp_path, capsys):
    """--seeds 2: two runs per grid point (train.seed 0 and 1, named _s0/_s1, one size), refused as another sweep
    under another count. Their losses are then set from the known law with a noise per seed, and --fit-only must
    recover the law from all twelve runs and report the seed noise it was given."""
    out = tmp_path / "s"
    proc = sweep_here(capsys, *ARGS, "--seeds", "2", "--config", base, "--out", out, "--fit-only")
    assert proc.returncode == 1 and "has finished yet" in proc.stderr, proc.stderr
    doc = json.loads((out / "sweep.json").read_text())
    points = doc["points"]
    assert doc["args"]["seeds"] == 2 and len(points) == 12 and len({p["size"] for p in points}) == 6
    assert (out / "points.txt").read_text().split() == [p["name"] for p in points]  # the job array's tasks
    rng = np.random.default_rng(0)
    for p in points:
        assert p["name"] == f"{p['size']}_s{p['seed']}" and p["seed"] in (0, 1)
        cfg = yaml.safe_load((out / "points" / p["name"] / "config.yaml").read_text())
        assert cfg["train"]["seed"] == p["seed"]
        loss = KNOWN.loss(p["n_params"], p["n_tokens"]) + 0.002 * rng.standard_normal()
        done = {k: p[k] for k in ("name", "seed", "flops", "n_params", "n_tokens", "tokens_trained", "total_steps")}
        (out / "points" / p["name"] / "done.json").write_text(json.dumps({**done, "loss": loss, "wall_s": 1.0}))
    fit = sweep_here(capsys, *ARGS, "--seeds", "2", "--config", base, "--out", out, "--fit-only")
    assert fit.returncode == 0, fit.stderr
    law = json.loads((out / "law.json").read_text())
    assert law["sweep"]["seeds"] == 2 and [b["n_points"] for b in law["budgets"]] == [6, 6]
    assert law["n_opt"]["a"] == pytest.approx(KNOWN.a, abs=0.05)
    report = (out / "report.md").read_text()
    assert "every size was trained 2 times (train.seed 0–1" in report and "2 seeds per size" in report
    noise = float(report.split("Seed noise")[1].split("median ")[1].split(" ")[0])
    assert 0.0003 < noise < 0.006  # the 0.002 given, from six pairs
    one = sweep_here(capsys, *ARGS, "--config", base, "--out", out, "--fit-only")
    assert one.returncode == 2 and "holds another sweep" in one.stderr
    zero = sweep_here(capsys, *ARGS, "--seeds", "0", "--config", base, "--out", tmp_path / "z")
    assert zero.returncode == 2 and "--seeds 0 must be at least 1" in zero.stderr


def test_a_killed_sweep_stops_its_running_point_at_a_checkpoint(base, tmp_path):
    """SIGTERM to sweep.py (a `kill`, a scheduler) reaches the running point as SIGTERM: pretrain.py saves a
    checkpoint and exits instead of training on as an orphan, no done.json is written, and the sweep says how to
    resume in one line."""
    import signal
    import time
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, str(SWEEP), "--budgets", "3e11", "1e12", "--sizes-per-budget", "3",
                             "--shapes", "small", "--config", str(base), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=launch_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = list(out.glob("points/*/run/metrics.jsonl"))
        if metrics and '"step": 20,' in metrics[0].read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None and metrics, "the first point did not reach step 20 in time"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "rerun the same command to resume" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    point = metrics[0].parents[1]
    log = (point / "train.log").read_text()
    assert "SIGTERM received: saved" in log, log[-2000:]
    assert list((point / "run" / "checkpoints").glob("step_*")) and not (point / "done.json").exists()


def test_plan_law_errors(tmp_path):
    for args, message in ((["--law", str(tmp_path / "law.json")], "no such file"),
                          (["--law", str(tmp_path / "law.json"), "--approach", "3"], "give one")):
        proc = subprocess.run([sys.executable, str(PLAN), *args, "--flops", "1e19"], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@needs_cluster
def test_sweep_as_a_slurm_job_array(cluster, swept, base, tmp_path):  # noqa: F811  (the imported fixture)
    """A copy of the finished sweep with half its points lost: --slurm submits one array task per lost point
    (only those), waits, collects them and fits."""
    import shutil
    out = tmp_path / "s"
    shutil.copytree(swept[0], out)
    lost = [p["name"] for p in _points(out)][::2]
    for name in lost:
        shutil.rmtree(out / "points" / name / "run")
        (out / "points" / name / "done.json").unlink()
    env = {**cluster.env, "OMP_NUM_THREADS": "1"}
    proc = sweep(*ARGS, "--config", str(base), "--out", str(out), "--slurm", "--sbatch-arg=--cpus-per-task=1",
                 env=env, timeout=600)
    assert "submitted job array" in proc.stdout and "with 3 tasks" in proc.stdout, proc.stdout + proc.stderr
    job = proc.stdout.split("submitted job array ")[1].split()[0]
    logs = sorted((out / "slurm").glob(f"sweep-{job}_*.out"))
    assert len(logs) == 3, proc.stdout + proc.stderr  # one task per lost point
    text = "".join(p.read_text() for p in logs)
    assert text.count("sweep point ") == 3 and "ranks exited with status 0" in text
    assert all(f"sweep point {name}" in text for name in lost)
    for p in _points(out):
        assert json.loads((out / "points" / p["name"] / "done.json").read_text())["loss"] > 0
    # Collected after the array: the fit ran (a law, or the one-line reason there is none at these budgets).
    assert proc.returncode in (0, 1) and (out / "report.md").is_file(), proc.stderr
    assert sum("/6]" in line for line in proc.stdout.splitlines()) == 3
    assert os.path.exists(out / "isoflop.png")
