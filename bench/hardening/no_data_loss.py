"""Issue 29's record: every bad input and fault tried against "never destroy an input" and "one writer per run", run
against the real entry points (subprocesses) and classified.

    python bench/hardening/no_data_loss.py [--root CHECKOUT] [--only export,import,train,sweep,data,consolidate]
        [--json results.json]

--root runs the cases against another checkout (a `git archive HEAD` copy gives the numbers before a change); the
fixtures (tiny dataset, a checkpoint, a Hugging Face directory) are built once with this checkout's helpers.

Outcomes: clear (refused in one line naming the problem, inputs intact; or, for a case that must work, it did),
traceback, silent (exit 0 with a wrong or lost result: an input deleted, two writers on one directory, an orphan),
late-or-misleading (failed, but after damage was done, or with a message that names something else).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE))

CLASSES = ("clear", "traceback", "silent", "late-or-misleading")
CASES: list[tuple[str, str, object]] = []


def case(area: str, name: str):
    def register(fn):
        CASES.append((area, name, fn))
        return fn
    return register


# ---------------------------------------------------------------------------------------------------------------
# Running and judging.

class Ctx:
    root: Path
    fx: dict
    work: Path


def env() -> dict:
    e = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = str(C.root) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def script(name: str) -> str:
    return str(C.root / "launch" / name)


def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=C.root,
                              env=env(), timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -9, e.stdout or "", (e.stderr or "") + "\n[bench: timed out]")


def start(*args, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            cwd=C.root, env=env(), start_new_session=True)


def digest(path: Path) -> str:
    """Names, sizes and contents of everything under `path` (or of the file): what must survive a refused command."""
    h = hashlib.sha256()
    p = Path(path)
    if not p.exists():
        return "missing"
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def judge_refusal(proc, keywords: tuple[str, ...], intact: dict[Path, str]) -> tuple[str, str]:
    err = (proc.stderr or "") + (proc.stdout or "")
    damaged = [str(p) for p, d in intact.items() if digest(p) != d]
    lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
    if "Traceback" in err:
        return "traceback", (err.strip().splitlines() or [""])[-1][:200]
    if proc.returncode == 0:
        return "silent", "exit 0" + (f"; changed or destroyed {damaged[0]}" if damaged else "")
    if damaged:
        return "late-or-misleading", f"exit {proc.returncode} after damaging {damaged[0]}: {lines[-1:]}"
    last = lines[-1] if lines else ""
    if not any(k.lower() in err.lower() for k in keywords):
        return "late-or-misleading", f"exit {proc.returncode}, message names something else: {last[:200]}"
    return "clear", last[:200]


def judge_ok(proc, check) -> tuple[str, str]:
    err = (proc.stderr or "") + (proc.stdout or "")
    if "Traceback" in err:
        return "traceback", (err.strip().splitlines() or [""])[-1][:200]
    if proc.returncode != 0:
        return "late-or-misleading", f"exit {proc.returncode}: {(proc.stderr or '').strip().splitlines()[-1:]}"
    problem = check()
    return ("silent", problem) if problem else ("clear", "worked")


C = Ctx()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures.

def build_fixtures(fx_dir: Path) -> dict:
    from tests.parallel.launcher_utils import launcher_config_dict, prepare_tiny_data, write_config
    fx_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_tiny_data(fx_dir / "data")
    cfg = launcher_config_dict(data, fx_dir / "run", model={"n_layers": 2},
                               train={"max_steps": 2, "eval_every": 0}, checkpoint={"every": 0, "keep": 1})
    write_config(fx_dir / "run.yaml", cfg)
    proc = subprocess.run([sys.executable, str(HERE / "launch" / "pretrain.py"), "--config", str(fx_dir / "run.yaml")],
                          capture_output=True, text=True, cwd=HERE, env=dict(os.environ, DS_ACCELERATOR="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = sorted((fx_dir / "run" / "checkpoints").glob("step_*"))[-1]
    from tests.llm.hf.test_import import SHAPES, make_hf_model
    make_hf_model(fx_dir / "hf", data["tokenizer"], **dict(SHAPES["gqa"]))
    long = launcher_config_dict(data, fx_dir / "unused", model={"n_layers": 2},
                                train={"max_steps": 100000, "eval_every": 0}, checkpoint={"every": 0, "keep": 1})
    write_config(fx_dir / "long.yaml", long)
    base = launcher_config_dict(data, fx_dir / "unused", train={"global_batch_size": 64, "micro_batch_size": 64})
    write_config(fx_dir / "sweep_base.yaml", base)
    return {"data": data, "ckpt": str(ckpt), "hf": str(fx_dir / "hf"), "long": str(fx_dir / "long.yaml"),
            "sweep_base": str(fx_dir / "sweep_base.yaml")}


def ckpt_copy(d: Path, name: str = "ckpt") -> Path:
    dst = d / name
    shutil.copytree(C.fx["ckpt"], dst)
    return dst


def hf_copy(d: Path, name: str = "hf") -> Path:
    dst = d / name
    shutil.copytree(C.fx["hf"], dst)
    return dst


def export(*args, **kw):
    return run(script("export_hf.py"), *args, **kw)


def import_(*args, **kw):
    return run(script("import_hf.py"), *args, **kw)


def hf_loads(path: Path):
    def check():
        if not (path / "config.json").is_file() or not list(path.glob("*.safetensors")):
            return f"{path} holds no complete export"
        return None
    return check


def ckpt_written(path: Path):
    def check():
        step = path / "step_00000000"
        if not (step / "trainer_state.json").is_file() or not (step / "model.pt").is_file():
            return f"{path} holds no complete import"
        return None
    return check


# ---------------------------------------------------------------------------------------------------------------
# export_hf.py and import_hf.py: an output that is, contains or lies inside an input.

OVERLAP_WORDS = ("input", "is the", "contains", "inside")


def _overlap_cases(tool: str, make_src, run_tool, layout: str, force: bool):
    def fn(w: Path):
        src = make_src(w)
        out = {"same": src, "inside": src / "out", "parent": src.parent, "symlink": w / "link",
               "dotdot": Path(f"{src}/../{src.name}"), "slash": Path(f"{src}/"),
               "relative": Path(os.path.relpath(src, C.root))}[layout]
        if layout == "symlink":
            out.symlink_to(src)
        intact = {src: digest(src)}
        proc = run_tool(src, out, *(["--force"] if force else []))
        return judge_refusal(proc, OVERLAP_WORDS, intact)
    return fn


for _layout in ("same", "inside", "parent", "symlink", "dotdot", "slash", "relative"):
    for _force in (False, True):
        if _layout in ("dotdot", "slash", "relative") and not _force:
            continue
        _sfx = " --force" if _force else ""
        case("export", f"OUT is {_layout} of the checkpoint{_sfx}")(
            _overlap_cases("export", ckpt_copy, export, _layout, _force))
        case("import", f"OUT is {_layout} of the HF dir{_sfx}")(
            _overlap_cases("import", hf_copy, import_, _layout, _force))


@case("export", "OUT is the folder of the tokenizer config.yaml names --force")
def _(w):
    src = ckpt_copy(w)
    tokdir = w / "tok"
    tokdir.mkdir()
    shutil.move(str(src / "tokenizer.model"), tokdir / "tokenizer.model")
    import yaml
    raw = yaml.safe_load((src / "config.yaml").read_text())
    raw["data"]["tokenizer"] = str(tokdir / "tokenizer.model")
    (src / "config.yaml").write_text(yaml.safe_dump(raw))
    intact = {tokdir: digest(tokdir), src: digest(src)}
    return judge_refusal(export(src, tokdir, "--force"), OVERLAP_WORDS + ("tokenizer",), intact)


# ---------------------------------------------------------------------------------------------------------------
# --force replaces only the command's own earlier output, and only once the new one is complete.

def _foreign(w: Path, kind: str) -> Path:
    out = w / "out"
    if kind == "file":
        out.write_text("my notes\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("my notes\n")
    return out


for _tool, _src, _fn in (("export", ckpt_copy, export), ("import", hf_copy, import_)):
    for _kind in ("dir", "file"):
        for _force in (False, True):
            def _make(tool=_tool, src_fn=_src, fn=_fn, kind=_kind, force=_force):
                def body(w):
                    src = src_fn(w)
                    out = _foreign(w, kind)
                    intact = {out: digest(out), src: digest(src)}
                    return judge_refusal(fn(src, out, *(["--force"] if force else [])),
                                         ("not empty", "not an output", "not a directory", "--force", "exists"), intact)
                return body
            case(_tool, f"OUT is someone else's {_kind}{' --force' if _force else ''}")(_make())


@case("export", "--force over an earlier export works")
def _(w):
    src, out = ckpt_copy(w), w / "out"
    first = export(src, out)
    if first.returncode != 0:
        return judge_ok(first, lambda: None)
    return judge_ok(export(src, out, "--force"), hf_loads(out))


@case("import", "--force over an earlier import works")
def _(w):
    src, out = hf_copy(w), w / "out"
    first = import_(src, out)
    if first.returncode != 0:
        return judge_ok(first, lambda: None)
    return judge_ok(import_(src, out, "--force"), ckpt_written(out))


@case("export", "--force over an earlier export the user added a file to")
def _(w):
    src, out = ckpt_copy(w), w / "out"
    export(src, out)
    (out / "README.md").write_text("my model card\n")
    intact = {out / "README.md": digest(out / "README.md")}
    return judge_refusal(export(src, out, "--force"), ("README.md", "did not write"), intact)


@case("import", "--force over an earlier import a training run now lives in")
def _(w):
    src, out = hf_copy(w), w / "out"
    import_(src, out)
    (out / "run" / "checkpoints").mkdir(parents=True)
    (out / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    intact = {out / "run": digest(out / "run")}
    return judge_refusal(import_(src, out, "--force"), ("run", "did not write"), intact)


@case("export", "--force over an import's output")
def _(w):
    src, hf, out = ckpt_copy(w), hf_copy(w), w / "out"
    import_(hf, out)
    intact = {out: digest(out)}
    return judge_refusal(export(src, out, "--force"), ("not an output", "export"), intact)


@case("import", "--force over an export's output")
def _(w):
    src, out = ckpt_copy(w), w / "out"
    export(src, out)
    intact = {out: digest(out)}
    return judge_refusal(import_(C.fx["hf"], out, "--force"), ("not an output", "import"), intact)


@case("export", "--force with a broken checkpoint keeps the earlier export")
def _(w):
    src, out = ckpt_copy(w), w / "out"
    export(src, out)
    intact = {out: digest(out)}
    (src / "model.pt").write_bytes(b"not a checkpoint")
    return judge_refusal(export(src, out, "--force"), ("model.pt", "checkpoint", "load", "read"), intact)


@case("import", "--force with a broken HF dir keeps the earlier import")
def _(w):
    src, out = hf_copy(w), w / "out"
    import_(src, out)
    intact = {out: digest(out)}
    for f in src.glob("*.safetensors"):
        f.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return judge_refusal(import_(src, out, "--force"), ("safetensors", "tensor", "weights"), intact)


def _kill_mid_write(w: Path, tool: str):
    src = ckpt_copy(w) if tool == "export" else hf_copy(w)
    out = w / "out"
    proc = start(script(f"{tool}_hf.py"), src, out, log=w / "killed.log")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        written = [p for p in w.rglob("*") if p.is_file() and "out" in p.relative_to(w).parts[0]]
        if written:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return src, out


@case("export", "kill -9 mid-write, then rerun the same command")
def _(w):
    src, out = _kill_mid_write(w, "export")
    half = out.exists() and hf_loads(out)() is not None
    proc = export(src, out)
    if half and proc.returncode != 0:
        return "late-or-misleading", f"the killed run left a half export at {out}, which blocks the rerun"
    return judge_ok(proc, hf_loads(out))


@case("import", "kill -9 mid-write, then rerun the same command")
def _(w):
    src, out = _kill_mid_write(w, "import")
    proc = import_(src, out)
    return judge_ok(proc, ckpt_written(out))


@case("export", "kill -9 mid-write leaves no half output under OUT")
def _(w):
    src, out = _kill_mid_write(w, "export")
    if out.exists() and any(out.iterdir()) and hf_loads(out)() is not None:
        return "silent", f"{out} holds a half-written export that looks like an output"
    return "clear", "OUT is absent or complete"


def _two_writers(w: Path, tool: str):
    src = ckpt_copy(w) if tool == "export" else hf_copy(w)
    out = w / "out"
    a = start(script(f"{tool}_hf.py"), src, out, "--force", log=w / "a.log")
    deadline = time.monotonic() + 240  # the second starts once the first is writing (its lock, partial or OUT)
    while time.monotonic() < deadline and a.poll() is None and not any("out" in p.name for p in w.iterdir()):
        time.sleep(0.02)
    # The first writer is paused while it holds the output (an import takes about a second once started, less than
    # the second's start-up: unpaused, the two never overlapped); the second starts and ends meanwhile.
    if a.poll() is None:
        a.send_signal(signal.SIGSTOP)
    b = start(script(f"{tool}_hf.py"), src, out, "--force", log=w / "b.log")
    rb = b.wait(timeout=300)
    if a.poll() is None:
        a.send_signal(signal.SIGCONT)
    ra = a.wait(timeout=300)
    logs = [(w / "a.log").read_text(), (w / "b.log").read_text()]
    if any("Traceback" in t for t in logs):
        return "traceback", [t for t in logs if "Traceback" in t][0].strip().splitlines()[-1][:200]
    if ra == 0 and rb == 0:
        return "silent", "both writers ran to the end on one OUT"
    loser = logs[1] if rb else logs[0]
    if "in use" in loser:
        check = hf_loads(out) if tool == "export" else ckpt_written(out)
        return ("clear", loser.strip().splitlines()[-1][:200]) if check() is None else ("silent", "OUT incomplete")
    return "late-or-misleading", loser.strip().splitlines()[-1][:200]


case("export", "two exports to one OUT at once")(lambda w: _two_writers(w, "export"))
case("import", "two imports to one OUT at once")(lambda w: _two_writers(w, "import"))


@case("export", "OUT's parent is a file")
def _(w):
    src = ckpt_copy(w)
    (w / "f").write_text("x")
    return judge_refusal(export(src, w / "f" / "out"), ("f", "directory", "file"), {w / "f": digest(w / "f")})


@case("import", "OUT's parent is a file")
def _(w):
    src = hf_copy(w)
    (w / "f").write_text("x")
    return judge_refusal(import_(src, w / "f" / "out"), ("f", "directory", "file"), {w / "f": digest(w / "f")})


# ---------------------------------------------------------------------------------------------------------------
# consolidate.py: --output is a file.

@case("consolidate", "--output is the checkpoint's own model.pt (--dtype bf16)")
def _(w):
    src = ckpt_copy(w)
    intact = {src / "model.pt": digest(src / "model.pt")}
    return judge_refusal(run(script("consolidate.py"), src, "--output", src / "model.pt", "--dtype", "bf16"),
                         OVERLAP_WORDS, intact)


@case("consolidate", "--output is the checkpoint directory")
def _(w):
    src = ckpt_copy(w)
    return judge_refusal(run(script("consolidate.py"), src, "--output", src), OVERLAP_WORDS + ("directory",),
                         {src: digest(src)})


@case("consolidate", "--output inside the checkpoint directory")
def _(w):
    src = ckpt_copy(w)
    return judge_refusal(run(script("consolidate.py"), src, "--output", src / "sub" / "m.pt"), OVERLAP_WORDS,
                         {src: digest(src)})


@case("consolidate", "--output is an existing directory elsewhere")
def _(w):
    src = ckpt_copy(w)
    (w / "d").mkdir()
    (w / "d" / "x").write_text("x")
    return judge_refusal(run(script("consolidate.py"), src, "--output", w / "d"), ("directory",),
                         {w / "d": digest(w / "d")})


# ---------------------------------------------------------------------------------------------------------------
# Training: one writer per out_dir / checkpoint.dir.

def _wait_for(path_glob_dir: Path, pattern: str, proc, timeout=240.0, text: str | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for p in path_glob_dir.glob(pattern):
            try:
                if text is None or text in p.read_text():
                    return True
            except OSError:
                pass
        time.sleep(0.2)
    return False


def _second_writer(w: Path, first_overrides, second_overrides, second_args=(), words=("in use",)):
    out = w / "run"
    a = start(script("pretrain.py"), "--config", C.fx["long"], f"out_dir={out}", *first_overrides, log=w / "a.log")
    try:
        if not _wait_for(out, "metrics.jsonl", a, text='"step"'):
            return "late-or-misleading", "the first run never started: " + (w / "a.log").read_text()[-300:]
        b = run(script("pretrain.py"), "--config", C.fx["long"], *second_args, *second_overrides, timeout=90)
    finally:
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
    if b.returncode == -9:
        return "silent", "the second run trained on beside the first (killed by the bench after 90 s)"
    return judge_refusal(b, words, {})


case("train", "second pretrain on a running run's out_dir")(
    lambda w: _second_writer(w, [], [f"out_dir={w / 'run'}"]))
case("train", "second pretrain, other out_dir, same checkpoint.dir")(
    lambda w: _second_writer(w, [f"checkpoint.dir={w / 'ck'}"],
                             [f"out_dir={w / 'run2'}", f"checkpoint.dir={w / 'ck'}"]))
case("train", "--eval-only on a running run's out_dir")(
    lambda w: _second_writer(w, ["checkpoint.every=1"], [f"out_dir={w / 'run'}"], ["--eval-only"]))
case("train", "second pretrain on out_dir/.. of a run whose checkpoint.dir is inside (same dir via a symlink)")(
    lambda w: (os.symlink(w / "run", w / "alias") if not (w / "alias").exists() else None,
               _second_writer(w, [], [f"out_dir={w / 'alias'}"]))[1])


@case("train", "kill -9 a run, rerun resumes (lock taken over)")
def _(w):
    out = w / "run"
    a = start(script("pretrain.py"), "--config", C.fx["long"], f"out_dir={out}", "checkpoint.every=2",
              log=w / "a.log")
    ok = _wait_for(out / "checkpoints", "step_*/trainer_state.json", a)
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    if not ok:
        return "late-or-misleading", "the first run saved no checkpoint"
    b = run(script("pretrain.py"), "--config", C.fx["long"], f"out_dir={out}", "train.max_steps=6",
            "checkpoint.every=2", timeout=240)
    return judge_ok(b, lambda: None if "resum" in (b.stdout + b.stderr).lower() else "did not resume")


@case("train", "two DeepSpeed launches (2 ranks each) on one out_dir")
def _(w):
    import socket
    out = w / "run"
    a = start(script("pretrain.py"), "--config", C.fx["long"], f"out_dir={out}", log=w / "a.log")
    try:
        if not _wait_for(out, "metrics.jsonl", a, text='"step"'):
            return "late-or-misleading", "the first run never started"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.monotonic()
        try:
            b = subprocess.run(["deepspeed", "--num_gpus", "2", "--master_port", str(port), script("pretrain.py"),
                                "--config", C.fx["long"], f"out_dir={out}"], capture_output=True, text=True,
                               cwd=C.root, env=env(), timeout=180, start_new_session=True)
        except subprocess.TimeoutExpired:
            return "silent", "the launch trained (or hung) beside the running run for 180 s"
    finally:
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
    if "Traceback" in b.stdout + b.stderr:
        return "traceback", [ln for ln in (b.stdout + b.stderr).splitlines() if "Error" in ln][-1:][0][:200] \
            if any("Error" in ln for ln in (b.stdout + b.stderr).splitlines()) else "traceback"
    if b.returncode == 0:
        return "silent", "both launches wrote one out_dir"
    n = (b.stdout + b.stderr).count("in use by")
    return ("clear", f"exit {b.returncode} in {time.monotonic() - t0:.0f} s, {n} line(s)") if n else \
        ("late-or-misleading", (b.stdout + b.stderr).strip().splitlines()[-1][:200])


@case("train", "out_dir is a file")
def _(w):
    (w / "f").write_text("x")
    return judge_refusal(run(script("pretrain.py"), "--config", C.fx["long"], f"out_dir={w / 'f'}", timeout=120),
                         ("is a file", "directory"), {w / "f": digest(w / "f")})


# ---------------------------------------------------------------------------------------------------------------
# The sweep: its points' trainers die with it, and a rerun never starts a second trainer on a point.

SWEEP_ARGS = ["--budgets", "3e11", "1e12", "--sizes-per-budget", "3", "--shapes", "small", "--bootstrap", "10"]


def _trainers(tag: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "pretrain.py" in cmd and tag in cmd:
                pids.append(int(p.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def _sweep_running(w: Path, out: Path):
    proc = start(script("sweep.py"), *SWEEP_ARGS, "--config", C.fx["sweep_base"], "--out", out, log=w / "sweep.log")
    ok = _wait_for(out, "points/*/run/metrics.jsonl", proc, text='"step"')
    return proc, ok


def _cleanup(tag: str) -> None:
    for pid in _trainers(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@case("sweep", "kill -9 of sweep.py: its point's trainer stops")
def _(w):
    out = w / "s"
    proc, ok = _sweep_running(w, out)
    try:
        if not ok:
            return "late-or-misleading", "no point started: " + (w / "sweep.log").read_text()[-300:]
        trainers = _trainers(str(out))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p) for p in trainers):
            time.sleep(0.5)
        alive = [p for p in trainers if _alive(p)]
        if alive:
            return "silent", f"the point's trainer (pid {alive[0]}) trains on, orphaned, 60 s after the sweep died"
        log = next(iter(out.glob("points/*/train.log"))).read_text()
        return ("clear", "the trainer saved a checkpoint and exited") if "SIGTERM" in log else \
            ("clear", "the trainer exited")
    finally:
        _cleanup(str(out))


@case("sweep", "rerun right after kill -9: never two trainers on one point")
def _(w):
    out = w / "s"
    proc, ok = _sweep_running(w, out)
    try:
        if not ok:
            return "late-or-misleading", "no point started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rerun = start(script("sweep.py"), *SWEEP_ARGS, "--config", C.fx["sweep_base"], "--out", out,
                      log=w / "rerun.log")
        most, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline and rerun.poll() is None:
            by_point: dict[str, int] = {}
            for pid in _trainers(str(out)):
                if _alive(pid):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    by_point[cmd] = by_point.get(cmd, 0) + 1
            most = max([most, *by_point.values()])
            time.sleep(0.2)
        os.killpg(rerun.pid, signal.SIGKILL) if rerun.poll() is None else None
        rerun.wait()
        if most >= 2:
            return "silent", "two trainers ran on one point directory at once"
        return "clear", "one trainer per point"
    finally:
        _cleanup(str(out))


@case("sweep", "a second sweep on a running sweep's --out")
def _(w):
    out = w / "s"
    proc, ok = _sweep_running(w, out)
    try:
        if not ok:
            return "late-or-misleading", "no point started"
        second = run(script("sweep.py"), *SWEEP_ARGS, "--config", C.fx["sweep_base"], "--out", out, timeout=120)
        if second.returncode == -9:
            return "silent", "the second sweep trained beside the first"
        return judge_refusal(second, ("in use",), {})
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _cleanup(str(out))


@case("sweep", "--fit-only on a running sweep's --out")
def _(w):
    out = w / "s"
    proc, ok = _sweep_running(w, out)
    try:
        if not ok:
            return "late-or-misleading", "no point started"
        second = run(script("sweep.py"), *SWEEP_ARGS, "--config", C.fx["sweep_base"], "--out", out, "--fit-only",
                     timeout=120)
        return judge_refusal(second, ("in use",), {})
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _cleanup(str(out))


@case("sweep", "pretrain by hand on a running sweep point's run directory")
def _(w):
    out = w / "s"
    proc, ok = _sweep_running(w, out)
    try:
        if not ok:
            return "late-or-misleading", "no point started"
        point = next(iter(out.glob("points/*/run/metrics.jsonl"))).parents[1]
        b = run(script("pretrain.py"), "--config", point / "config.yaml", timeout=90)
        if b.returncode == -9:
            return "silent", "a second trainer ran on the point"
        return judge_refusal(b, ("in use",), {})
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _cleanup(str(out))


# ---------------------------------------------------------------------------------------------------------------
# The data pipeline: one writer per --output.

def _prepare(out: Path, log: Path | None = None, extra=()):
    args = (script("prepare_data.py"), "--input", C.root / "data" / "raw" / "python_docs.jsonl", "--output", out,
            *extra)
    return start(*args, log=log) if log else run(*args, timeout=600)


@case("data", "two prepare_data runs on one --output")
def _(w):
    out = w / "d"
    a = _prepare(out, w / "a.log")
    try:
        if not _wait_for(out, "work/manifest.json", a):
            return "late-or-misleading", "the first run did not start: " + (w / "a.log").read_text()[-300:]
        b = run(script("prepare_data.py"), "--input", C.root / "data" / "raw" / "python_docs.jsonl", "--output", out,
                timeout=240)
    finally:
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
    if b.returncode == -9:
        return "silent", "the second run worked beside the first"
    return judge_refusal(b, ("in use",), {})


@case("data", "kill -9 prepare_data, rerun resumes")
def _(w):
    out = w / "d"
    a = _prepare(out, w / "a.log")
    _wait_for(out, "work/ingest/*.done", a)
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    b = _prepare(out)
    return judge_ok(b, lambda: None if (out / "data.bin").is_file() else "no data.bin")


@case("data", "--output is the input file")
def _(w):
    src = w / "in.jsonl"
    shutil.copyfile(C.root / "data" / "raw" / "python_docs.jsonl", src)
    proc = run(script("prepare_data.py"), "--input", src, "--output", src, timeout=120)
    return judge_refusal(proc, ("output", "input", "file", "directory"), {src: digest(src)})


@case("data", "--output is the folder holding the input")
def _(w):
    (w / "raw").mkdir()
    src = w / "raw" / "in.jsonl"
    shutil.copyfile(C.root / "data" / "raw" / "python_docs.jsonl", src)
    proc = run(script("prepare_data.py"), "--input", src, "--output", w / "raw", timeout=600)
    if proc.returncode == 0 and digest(src) != "missing":
        return "clear", "inputs kept (the pipeline deletes nothing it did not write)"
    return judge_refusal(proc, ("input", "not prepared by this pipeline"), {src: digest(src)})


# ---------------------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=HERE, help="checkout whose entry points are run")
    ap.add_argument("--only", default="", help="comma-separated areas")
    ap.add_argument("--json", type=Path, help="write the outcomes here")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=None, help="the printed log of an interrupted run: its cases are kept")
    args = ap.parse_args()
    C.root = args.root.resolve()
    C.work = Path(args.work or tempfile.mkdtemp(prefix="no_data_loss_"))
    fx_file = C.work / "fixtures.json"
    if fx_file.is_file():
        C.fx = json.loads(fx_file.read_text())
    else:
        C.fx = build_fixtures(C.work / "fixtures")
        fx_file.write_text(json.dumps(C.fx))
    areas = set(filter(None, args.only.split(",")))
    chosen = [(a, n, f) for a, n, f in CASES if not areas or a in areas]
    done: dict[tuple[str, str], dict] = {}

    def one(item):
        i, (area, name, fn) = item
        w = C.work / f"{args.root.name}_{i:03d}"
        shutil.rmtree(w, ignore_errors=True)
        w.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            outcome, detail = fn(w)
        except Exception as e:  # a bench bug is reported, not fatal
            outcome, detail = "bench-error", f"{type(e).__name__}: {e}"
        print(f"{outcome:20s} {area:12s} {name}  [{time.monotonic() - t0:.0f}s] {detail}", flush=True)
        return {"area": area, "case": name, "outcome": outcome, "detail": detail}

    for line in args.log.read_text().splitlines() if args.log and args.log.is_file() else []:
        # Outcomes printed by an earlier, interrupted run of the same root: kept, not run again.
        outcome, area, rest = line[:20].strip(), line[21:33].strip(), line[34:]
        if outcome in (*CLASSES, "bench-error") and "  [" in rest:
            done[(area, rest.split("  [")[0])] = {"area": area, "case": rest.split("  [")[0], "outcome": outcome,
                                                  "detail": rest.split("] ", 1)[-1]}
    chosen = [c for c in chosen if (c[0], c[1]) not in done]

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(done.values()) + list(pool.map(one, enumerate(chosen)))
    counts = {c: sum(r["outcome"] == c for r in results) for c in (*CLASSES, "bench-error")}
    print(f"{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps({"root": str(C.root), "counts": counts, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
