"""Run a sweep's points here, one after the other (debug mode): each point's trainer is launch/pretrain.py in a
process of its own, watched through its metrics.jsonl, stopped at a checkpoint when the sweep stops, and sent
SIGTERM when the sweep dies however it dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llm.sweep import ROOT, RunFailed, UserError
from llm.sweep.rundir import POLL_S, collect_point, finished, metrics_file, point_dir, run_finished
from llm.train.metrics import format_duration, last_train_row
from typed_yaml import log, runlock

PRETRAIN = ROOT / "launch" / "pretrain.py"
ORPHAN_WAIT_S = 300.0
"""How long a rerun waits for a point's trainer left by a killed sweep (sent SIGTERM when the sweep died) to save
its checkpoint and exit, before it gives up and names the process."""
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def watch(proc: subprocess.Popen, metrics: Path, total_steps: int, prefix: str, poll_s: float = POLL_S) -> int:
    """Wait for a point's run and show its progress from its metrics.jsonl: on a terminal one line rewritten in
    place (step, loss, tokens/s, the point's ETA), in a log a line at each quarter of the run, looking every
    poll_s seconds. Returns its status."""
    tty, quarter, t0 = sys.stdout.isatty(), 1, time.monotonic()
    shown, first = False, None  # first: (time, step) of the first logged step seen, to time steps without start-up
    while True:
        try:
            rc = proc.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            pass
        row = last_train_row(metrics)
        if not row or not row.get("step"):
            continue
        step, now = int(row["step"]), time.monotonic()
        first = first or (now, step)
        per_step = (now - first[0]) / (step - first[1]) if step > first[1] else (now - t0) / step
        eta = per_step * max(0, total_steps - step)
        msg = (f"{prefix}: step {step}/{total_steps} loss {row['loss']:.4f} "
               f"{row.get('tokens_per_s', 0) / 1e3:.1f}k tok/s, ETA {format_duration(eta)}")
        if tty:
            print(f"\r{msg}\033[K", end="", flush=True)
            shown = True
        elif step >= quarter * total_steps / 4 and step < total_steps:
            log.info(msg)
            quarter = int(step * 4 // total_steps) + 1
    if shown:
        print("\r\033[K", end="", flush=True)
    return rc


def wait_for_orphan(run_dir: Path, name: str, wait_s: float = ORPHAN_WAIT_S) -> None:
    """Wait until no process holds run directory `run_dir`'s lock: a trainer of an earlier sweep that was killed
    (sent SIGTERM when its sweep died, it is saving a checkpoint), or one started by hand. UserError naming it
    after wait_s seconds."""
    lock = run_dir / runlock.LOCK_FILE
    holder = runlock.holder(lock)
    if holder is None:
        return
    log.info(f"{name}: waiting for {runlock.describe(holder)} to finish writing {run_dir} (a trainer of an earlier "
             "sweep, stopping at a checkpoint?) before running the point again")
    deadline = time.monotonic() + wait_s
    while (holder := runlock.holder(lock)) is not None:
        if time.monotonic() > deadline:
            raise UserError(f"point {name}: {run_dir} is still written by {runlock.describe(holder)} after "
                            f"{wait_s:.0f} s: stop it (kill {holder.get('pid')}) or let it finish, then rerun")
        time.sleep(0.5)


def die_with_parent():
    """A preexec_fn for a point's trainer: on Linux, SIGTERM when the sweep dies however it dies (prctl
    PR_SET_PDEATHSIG, prctl(2); kept across exec), so pretrain.py saves a checkpoint and exits instead of training on
    as an orphan beside the rerun. None elsewhere (there, the trainer's run lock still refuses a second trainer)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()  # looked up before the fork

    def arm():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the sweep died before the line above: nothing would signal us
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def run_local(out: Path, doc: dict) -> None:
    """Run every unfinished point in debug mode, one after the other, with a progress line per point: i/N and an
    ETA from the 6ND FLOPs still to run at the rate measured so far (points differ in cost, not in count)."""
    done = finished(out, doc)
    todo = [p for p in doc["points"] if p["name"] not in done]
    total = len(doc["points"])
    if done:
        log.info(f"sweep: {len(done)}/{total} points already finished (done.json), skipping them")
    flops_left = sum(6.0 * p.get("n_params_active", p["n_params"]) * p["tokens_trained"] for p in todo)
    flops_run, t_start = 0.0, time.monotonic()
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for i, p in enumerate(todo, len(done) + 1):
        d = point_dir(out, p["name"])
        cost = 6.0 * p.get("n_params_active", p["n_params"]) * p["tokens_trained"]
        flops_left -= cost
        if run_finished(out, p):  # killed after its run, before its marker
            result = collect_point(out, p)
            log.info(f"[{i}/{total}] {p['name']}: run had finished, collected: eval loss {result['loss']:.4f}")
            continue
        point_lock = runlock.lock_dir(d, f"sweep point {d}")  # against a SLURM task's --collect-point
        wait_for_orphan(d / "run", p["name"])
        log.info(f"[{i}/{total}] {p['name']}: N={p['n_params']:,} D={p['n_tokens']:,} ({p['total_steps']} steps) ...")
        t0 = time.monotonic()
        with open(d / "train.log", "a") as fh:
            proc = subprocess.Popen([sys.executable, str(PRETRAIN), "--config", str(d / "config.yaml")], stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=die_with_parent(),
                                    start_new_session=True)  # a terminal's Ctrl-C reaches only the sweep (below)
            try:
                rc = watch(proc, metrics_file(out, p["name"]), p["total_steps"], f"[{i}/{total}] {p['name']}")
            except BaseException:  # Ctrl-C or a kill of the sweep: SIGTERM makes pretrain.py save a checkpoint
                proc.terminate()   # and exit, so the rerun resumes the point instead of restarting it
                proc.wait()
                raise
        if rc != 0:
            raise RunFailed(f"point {p['name']} exited with status {rc}: see {d / 'train.log'}; rerun the same "
                            "command to resume")
        wall = time.monotonic() - t0
        result = collect_point(out, p, wall)
        point_lock.release()
        flops_run += cost
        eta = (time.monotonic() - t_start) / flops_run * flops_left
        log.info(f"[{i}/{total}] {p['name']}: eval loss {result['loss']:.4f} in {wall:.0f} s; "
                 f"ETA {format_duration(eta)}")
