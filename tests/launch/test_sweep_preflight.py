"""launch/sweep.py checks what is cheap to check before it designs the grid (a minute or more for wide budgets)."""
from __future__ import annotations

import time

import yaml

from launch import cli
from launch.sweep import main
from tests.parallel.launcher_utils import launcher_config_dict, write_config


def test_slurm_without_sbatch_is_refused_before_the_grid_is_designed(tiny_data, tmp_path, monkeypatch, capsys):
    base = write_config(tmp_path / "base.yaml", launcher_config_dict(tiny_data, tmp_path / "unused"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no squeue
    t0 = time.perf_counter()
    assert cli.call(main, ["--budgets", "1e15", "3e15", "1e16", "--config", str(base), "--out", str(tmp_path / "s"),
                 "--slurm"]) == 2
    err = capsys.readouterr().err
    assert "--slurm: sbatch and squeue not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists() and time.perf_counter() - t0 < 5  # nothing designed nor written
    assert cli.call(main, ["--budgets", "1e15", "3e15", "--config", str(base), "--out", str(tmp_path / "s"), "--slurm",
                 "--no-wait"]) == 2
    assert "--slurm: sbatch not found" in capsys.readouterr().err


def test_missing_dataset_is_refused_before_the_grid_is_designed(tiny_data, tmp_path, capsys):
    raw = launcher_config_dict(tiny_data, tmp_path / "unused")
    raw["data"]["paths"] = [str(tmp_path / "gone" / "data")]
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(raw))
    assert cli.call(main, ["--budgets", "1e15", "3e15", "--config", str(base), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert f"data.paths {tmp_path / 'gone' / 'data'}.bin/.idx not found" in err and not (tmp_path / "s").exists()
