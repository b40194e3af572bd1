"""Benchmark: an isoFLOP sweep on the bundled corpus, end to end, with launch/sweep.py (about half an hour on 2 CPUs).

    python bench/bench_sweep.py [--data-dir runs/data/python_docs] [--budgets 5e11 1e12 2e12] [--sizes 4]

The base config is configs/debug.yaml (4,096-piece tokenizer, seq_len 256, fp32) pointed at --data-dir (prepared
with launch/prepare_data.py first if it is missing). The sweep itself runs in runs/bench_sweep/sweep (checkpoints
and logs stay there); law.json, report.md, isoflop.png, sweep.json and summary.json (wall time, `uptime` before
and after: the machine's load) are copied to bench/results_sweep/. Rerunning resumes the sweep (sweep.py is
resumable) and re-fits; --fresh starts over.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results_sweep"
WORK = ROOT / "runs" / "bench_sweep"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT / "runs" / "data" / "python_docs")
    ap.add_argument("--budgets", nargs="+", default=["5e11", "1e12", "2e12"])
    ap.add_argument("--sizes", type=int, default=4)
    ap.add_argument("--spread", type=float, default=0.4)
    ap.add_argument("--fresh", action="store_true", help="delete the previous sweep first")
    ap.add_argument("--fit-only", action="store_true",
                    help="re-fit and redraw the finished points; keeps summary.json's timing of the run")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DS_ACCELERATOR": "cpu"}
    if not (args.data_dir / "data.idx").is_file():
        subprocess.run([sys.executable, str(ROOT / "launch" / "prepare_data.py"), "--input",
                        str(ROOT / "data" / "raw" / "python_docs.jsonl"), "--output", str(args.data_dir)],
                       check=True, env=env, cwd=ROOT)
    sweep_dir = WORK / "sweep"
    if args.fresh:
        shutil.rmtree(sweep_dir, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "configs" / "debug.yaml").read_text())
    base["data"]["paths"] = [str((args.data_dir / "data").resolve())]
    base["data"]["tokenizer"] = str((args.data_dir / "tokenizer.model").resolve())
    (WORK / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))

    before, t0 = _uptime(), time.monotonic()
    print(f"uptime before: {before}", flush=True)
    cmd = [sys.executable, str(ROOT / "launch" / "sweep.py"), "--budgets", *args.budgets, "--sizes-per-budget",
           str(args.sizes), "--spread", str(args.spread), "--config", str(WORK / "base.yaml"), "--out", str(sweep_dir)]
    cmd += ["--fit-only"] if args.fit_only else []
    rc = subprocess.call(cmd, env=env, cwd=ROOT)
    wall, after = time.monotonic() - t0, _uptime()
    print(f"uptime after: {after}; wall {wall:.0f} s; sweep.py exit {rc}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("law.json", "report.md", "isoflop.png", "sweep.json"):
        if (sweep_dir / name).is_file():
            shutil.copy(sweep_dir / name, RESULTS / name)
        else:  # e.g. no law.json when the fit found no law: an old copy would contradict the report
            (RESULTS / name).unlink(missing_ok=True)
    if args.fit_only:
        summary_path = RESULTS / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary["refit"] = {"exit_status": rc, "uptime": after, "code": "launch/sweep.py --fit-only at this commit"}
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
        return rc
    points = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("points/*/done.json"))]
    summary = {"command": " ".join(Path(c).name if c == sys.executable else c for c in cmd[1:]),
               "exit_status": rc, "wall_s": wall, "uptime_before": before, "uptime_after": after,
               "cpus": os.cpu_count(), "points_finished": len(points),
               "point_wall_s": {p["name"]: p["wall_s"] for p in points}}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
