"""Run a sweep's unfinished points on SLURM as one job array: launch/slurm/sweep.sbatch, task i trains the point on
line i + 1 of DIR/points.txt and writes its done.json (launch/sweep.py --collect-point)."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from llm.sweep import ROOT, RunFailed, UserError
from llm.sweep.rundir import POLL_S, finished
from llm.train.metrics import format_duration
from typed_yaml import log

SWEEP_SBATCH = ROOT / "launch" / "slurm" / "sweep.sbatch"


def check_slurm(wait: bool) -> None:
    """The SLURM commands the sweep needs (squeue only to `wait` for the array) and the job script are here;
    UserError naming what is missing."""
    needed = ("sbatch", "squeue") if wait else ("sbatch",)
    missing = [c for c in needed if shutil.which(c) is None]
    if missing:
        raise UserError(f"--slurm: {' and '.join(missing)} not found (is SLURM installed and on PATH?); without "
                        "--slurm the points run here one after the other")
    if not SWEEP_SBATCH.is_file():
        raise UserError(f"--slurm: the job script {SWEEP_SBATCH} is missing from this checkout")


def run_slurm(out: Path, doc: dict, sbatch_args: list[str], wait: bool) -> None:
    """Submit the unfinished points as one job array (launch/slurm/sweep.sbatch: task i runs line i of
    DIR/points.txt) and, with `wait`, poll until it has left the queue, printing each point as it finishes."""
    done = finished(out, doc)
    names = [p["name"] for p in doc["points"]]
    todo = [i for i, n in enumerate(names) if n not in done]
    if not todo:
        return
    (out / "slurm").mkdir(exist_ok=True)
    argv = ["sbatch", "--parsable", f"--array={','.join(map(str, todo))}",
            f"--output={out / 'slurm' / 'sweep-%A_%a.out'}", *sbatch_args, str(SWEEP_SBATCH), str(out.resolve())]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    except FileNotFoundError:
        raise UserError("--slurm: sbatch not found (is SLURM installed and on PATH?)") from None
    if proc.returncode != 0:
        raise UserError(f"sbatch failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    job = proc.stdout.strip().split(";")[0]
    log.info(f"sweep: submitted job array {job} with {len(todo)} tasks (logs {out / 'slurm'}/sweep-{job}_<task>.out)")
    if not wait:
        log.info("sweep: --no-wait: rerun the same command after the job to collect and fit")
        return
    seen, t_start, total = set(done), time.monotonic(), len(names)
    while True:
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
        now = finished(out, doc)
        for name in names:
            if name in now and name not in seen:
                seen.add(name)
                new = len(seen) - len(done)
                eta = (time.monotonic() - t_start) / new * (total - len(seen))
                log.info(f"[{len(seen)}/{total}] {name}: eval loss {now[name]['loss']:.4f}; ETA {format_duration(eta)}")
        if q.returncode == 0 and not q.stdout.strip():
            break
        time.sleep(POLL_S)
    missing = [n for n in names if n not in finished(out, doc)]
    if missing:
        raise RunFailed(f"job {job} ended with {len(missing)} point(s) unfinished ({', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''}): see {out / 'slurm'}; rerun to resubmit them")
