"""Issue 29 at the entry points: no command deletes or writes into its own input, and one process writes a run, a
sweep, a sweep point or a data folder at a time (the second is refused in one line naming the first); a sweep's
trainer dies with the sweep. The full record of faults tried is bench/hardening/no_data_loss.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launch import cli
from data_pipeline.config import load_data_config
from data_pipeline.errors import DataError
from launch.export_hf import main as export_main
from launch.import_hf import main as import_main
from llm.config import config_from_dict
from llm.train.setup import prepare_out_dir, release_run
from tests.test_runlock import hold
from typed_yaml import runlock

ROOT = Path(__file__).resolve().parents[2]
MODEL = {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_ff": 128, "vocab_size": 512, "seq_len": 32}


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("main", [export_main, import_main], ids=["export_hf", "import_hf"])
@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_force_never_deletes_or_writes_into_the_input(main, where, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("model.pt", "tokenizer.model", "config.json", "tokenizer.json"):  # what the readers look for first
        (src / name).write_text(name)
    (src / "config.yaml").write_text(yaml.safe_dump({"model": MODEL}))
    before = _tree(tmp_path)
    out = {"same": src, "inside": src / "out", "parent": tmp_path}[where]
    assert cli.call(main, [str(src), str(out), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src) in err[0] and ("input" in err[0]), err
    assert _tree(tmp_path) == before


def _run_cfg(tmp_path: Path, **extra):
    raw = {"model": MODEL,
           "data": {"paths": [str(tmp_path / "data")]}, "out_dir": str(tmp_path / "run"), **extra}
    return config_from_dict(raw, source="test")


def test_a_second_writer_of_a_run_is_refused_naming_the_first(tmp_path, capsys):
    cfg = _run_cfg(tmp_path)
    holder = hold(tmp_path / "run" / runlock.LOCK_FILE)
    try:
        with pytest.raises(runlock.LockHeld, match=f"out_dir=.*run is in use by pid {holder.pid}"):
            prepare_out_dir(cfg, is_main=True)
        prepare_out_dir(cfg, is_main=False)  # the other ranks of a launched job write under rank 0's lock
    finally:
        holder.kill()
        holder.wait()
    prepare_out_dir(cfg, is_main=True)  # the killed holder's lock is taken over, and said so
    said = capsys.readouterr().out.splitlines()
    assert any(f"lock left by pid {holder.pid}" in s for s in said), said
    release_run(cfg)
    assert not (tmp_path / "run" / runlock.LOCK_FILE).exists()


def test_a_checkpoint_dir_outside_out_dir_is_locked_too(tmp_path):
    cfg = _run_cfg(tmp_path, checkpoint={"dir": str(tmp_path / "shared_ckpt")})
    holder = hold(tmp_path / "shared_ckpt" / runlock.LOCK_FILE)
    try:
        with pytest.raises(runlock.LockHeld, match="checkpoint.dir=.*shared_ckpt is in use"):
            prepare_out_dir(cfg, is_main=True)
    finally:
        holder.kill()
        holder.wait()
        release_run(cfg)


def test_a_second_copy_of_a_data_task_is_refused(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello world"}\n')
    cfg = load_data_config(None, [f'inputs=["{src}"]', f"output={tmp_path / 'out'}"])
    from data_pipeline.pipeline import run
    holder = hold(tmp_path / "out" / "work" / ".lock-task0")
    try:
        with pytest.raises(DataError, match=f"--output .*out \\(task 0\\) is in use by pid {holder.pid}"):
            run(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out" / "work" / "manifest.json").exists()  # refused before writing anything


def test_a_second_sweep_on_one_directory_is_refused(tmp_path, capsys):
    from launch.sweep import main as sweep_main
    out = tmp_path / "s"
    holder = hold(out / runlock.LOCK_FILE)
    try:
        rc = cli.call(sweep_main, ["--budgets", "3e10", "6e10", "--sizes-per-budget", "3", "--spread", "0.25",
                                   "--fit-only", "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"is in use by pid {holder.pid}" in err[0], err
    assert not (out / "sweep.json").exists()


def test_a_rerun_waits_for_a_trainer_left_by_a_killed_sweep(tmp_path, capsys):
    from llm.sweep import UserError
    from llm.sweep.local import wait_for_orphan
    run_dir = tmp_path / "run"
    holder = hold(run_dir / runlock.LOCK_FILE, seconds=1.5)  # an orphan saving its checkpoint, then exiting
    t0 = time.monotonic()
    wait_for_orphan(run_dir, "c1_n1", wait_s=60)
    said = capsys.readouterr().out.splitlines()
    assert holder.wait(timeout=10) == 0 and time.monotonic() - t0 < 30
    assert len(said) == 1 and f"pid {holder.pid}" in said[0]
    holder = hold(run_dir / runlock.LOCK_FILE)
    try:
        with pytest.raises(UserError, match=f"still written by pid {holder.pid}.*kill {holder.pid}"):
            wait_for_orphan(run_dir, "c1_n1", wait_s=0.5)
    finally:
        holder.kill()
        holder.wait()


PARENT = """
import subprocess, sys, time
from llm.sweep.local import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=die_with_parent(),
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_sweeps_trainer_dies_with_the_sweep_even_by_kill_9(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    child = int(parent.stdout.readline())
    try:
        assert _running(child) and os.getsid(child) == child  # its own session still (Ctrl-C reaches the sweep only)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child), "the trainer outlived its sweep"
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)
