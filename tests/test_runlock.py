"""typed_yaml/runlock.py and typed_yaml/output_dir.py with real processes and files: a lock held by another process
is refused naming it, a killed holder's lock is taken over and said so; an output that is, contains or lies inside an
input is refused, and --force replaces only a complete new output over the command's own earlier one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from typed_yaml import ConfigError, runlock
from typed_yaml.output_dir import MARKER, staged_output

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time; from typed_yaml import runlock; runlock.acquire(sys.argv[1], 'test'); print('locked', "
        "flush=True); time.sleep(float(sys.argv[2]))")


def hold(path: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding lock file `path` (for `seconds`), once this returns."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_lock_held_elsewhere_is_refused_naming_the_holder_then_taken_over_when_it_dies(tmp_path):
    path = tmp_path / "run" / runlock.LOCK_FILE
    holder = hold(path)
    try:
        assert runlock.holder(path)["pid"] == holder.pid
        with pytest.raises(runlock.LockHeld, match=rf"out_dir x is in use by pid {holder.pid} on host .*-c"):
            runlock.acquire(path, "out_dir x")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert runlock.holder(path) is None  # the kernel dropped the dead holder's flock; its record is still there
    said = []
    lock = runlock.acquire(path, "out_dir x", log=said.append)
    assert len(said) == 1 and f"taking over the lock left by pid {holder.pid}" in said[0] and "no longer" in said[0]
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert runlock.acquire(path, "out_dir x") is lock  # re-entrant in one process
    lock.release()
    assert not path.exists()  # a clean release leaves nothing for the next taker to report
    said.clear()
    runlock.acquire(path, "out_dir x", log=said.append).release()
    assert said == []


def test_a_lock_is_not_taken_in_a_directory_that_cannot_hold_it(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        runlock.lock_dir(tmp_path / "f" / "run", "out_dir")


def _write(tmp: Path, text: str = "new") -> None:
    (tmp / "weights").write_text(text)


def test_an_output_that_is_contains_or_lies_inside_an_input_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.pt").write_text("precious")
    (tmp_path / "link").symlink_to(src)
    for out, word in ((src, "is the"), (src / "sub", "inside"), (tmp_path, "contains"), (tmp_path / "link", "is the"),
                      (Path(f"{src}/../src/"), "is the")):
        with pytest.raises(ConfigError, match=word):
            with staged_output(out, "cmd", [("checkpoint", src)], force=True):
                pass
    assert (src / "model.pt").read_text() == "precious" and sorted(p.name for p in src.iterdir()) == ["model.pt"]


def test_force_replaces_only_the_commands_own_output_and_only_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes").write_text("mine")
    with pytest.raises(ConfigError, match="not empty .*--force"):
        with staged_output(out, "cmd"):
            pass
    with pytest.raises(ConfigError, match=f"not an output of cmd \\(no {MARKER}"):
        with staged_output(out, "cmd", force=True):
            pass
    assert (out / "notes").read_text() == "mine"

    new = tmp_path / "new"
    with staged_output(new, "cmd") as tmp:
        _write(tmp, "v1")
    assert json.loads((new / MARKER).read_text())["entries"] == ["weights"]
    with pytest.raises(RuntimeError):  # a failed rewrite keeps the earlier output and leaves no partial directory
        with staged_output(new, "cmd", force=True) as tmp:
            _write(tmp, "half")
            raise RuntimeError("disk full")
    assert (new / "weights").read_text() == "v1" and not (tmp_path / ".new.partial").exists()
    with pytest.raises(ConfigError, match="not an output of other"):
        with staged_output(new, "other", force=True):
            pass
    with staged_output(new, "cmd", force=True) as tmp:
        _write(tmp, "v2")
    assert (new / "weights").read_text() == "v2"
    (new / "run").mkdir()  # a training run started in the output is the user's
    with pytest.raises(ConfigError, match="holds run, which cmd did not write"):
        with staged_output(new, "cmd", force=True):
            pass
    assert (new / "run").is_dir() and not (tmp_path / ".new.lock").exists()


def test_what_a_killed_writer_leaves_is_cleaned_up_or_put_back(tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "weights").write_text("half")  # killed mid-write: the rerun is not blocked by it
    said = []
    with staged_output(out, "cmd", log=said.append) as tmp:
        _write(tmp, "v1")
    assert (out / "weights").read_text() == "v1" and not partial.exists() and "unfinished" in said[0]
    os.replace(out, tmp_path / ".out.old")  # killed between the swap's two renames
    with pytest.raises(ConfigError, match="not empty"):
        with staged_output(out, "cmd", log=said.append):
            pass
    assert (out / "weights").read_text() == "v1" and "restored" in said[-1]


def test_a_second_writer_of_one_output_is_refused(tmp_path):
    holder = hold(tmp_path / ".out.lock")
    try:
        with pytest.raises(runlock.LockHeld, match=f"output .*out is in use by pid {holder.pid}"):
            with staged_output(tmp_path / "out", "cmd"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out").exists()


def test_a_lock_record_that_cannot_be_written_is_one_line(tmp_path):
    """A full disk (here the file-size limit, EFBIG, as tests/test_env_faults.py provokes it) when the lock record is
    written: the one-line DiskFull naming the lock file, not an OSError traceback (prepare_data with 0 bytes free)."""
    import subprocess
    import sys
    child = ("import resource, signal, sys\n"
             "from typed_yaml import runlock\n"
             "from typed_yaml.disk import DiskFull\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))\n"
             "try:\n"
             "    runlock.lock_dir(sys.argv[1], 'out_dir=x')\n"
             "except DiskFull as e:\n"
             "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", child, str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.startswith(str(tmp_path / "run")) and "while writing the lock record of out_dir=x" in r.stdout
