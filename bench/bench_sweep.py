"""Benchmark: an isoFLOP sweep on the bundled corpus, end to end, with launch/sweep.py (about half an hour on 2 CPUs).

    python bench/bench_sweep.py [--budgets 1e12 3e12 1e13] [--sizes 5] [--vocab 512] [--seq-len 128] [--shapes small]
    python bench/bench_sweep.py --budgets 1e12 3e12 --seeds 2     # seed noise: bench/results_sweep_seeds2/

CPU-scale by default: the bundled corpus re-tokenized with a 512-piece tokenizer (2.2M tokens instead of 1.2M at
4,096 pieces, and embeddings small enough that models from 150k parameters up are mostly not embeddings), seq_len
128 (so PaLM App. B's FLOPs, attention in and the input embedding out, stay within 20% of 6ND at every point:
0.82-1.12x in the default grid) and the shape designer's
SMALL rules (llm/shape.py); the base config is configs/sweep_cpu.yaml (fp32, seed 0). At the
defaults of the earlier bench (--vocab 4096 --seq-len 256 --shapes standard) the smallest shape is 1.3M
parameters, compute-optimal only near 3e14 FLOPs, out of a CPU's reach: that bench (5e11-2e12 FLOPs, its report in
bench/results_sweep/ at commit 3a04201) found every profile falling towards its smallest size and no law.
The data is prepared once in runs/data/python_docs_v{VOCAB}; the sweep runs in runs/bench_sweep/sweep (checkpoints
and logs stay there); law.json, report.md, isoflop.png, sweep.json and summary.json (wall time, `uptime` before
and after: the machine's load) are copied to bench/results_sweep/. With --seeds K > 1 the sweep runs in
runs/bench_sweep_seedsK/ and its results go to bench/results_sweep_seedsK/. Rerunning resumes the sweep (sweep.py
is resumable) and re-fits; --fresh starts over.
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
    ap.add_argument("--budgets", nargs="+", default=["1e12", "3e12", "1e13"])
    ap.add_argument("--sizes", type=int, default=5)
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--vocab", type=int, default=512, help="tokenizer pieces (the data is re-prepared per size)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--shapes", default="small", help="shape designer rules (launch/sweep.py --shapes)")
    ap.add_argument("--seeds", type=int, default=1, help="training runs per point (launch/sweep.py --seeds)")
    ap.add_argument("--fresh", action="store_true", help="delete the previous sweep first")
    ap.add_argument("--fit-only", action="store_true",
                    help="re-fit and redraw the finished points; keeps summary.json's timing of the run")
    args = ap.parse_args()
    suffix = "" if args.seeds == 1 else f"_seeds{args.seeds}"
    work, results = WORK.with_name(WORK.name + suffix), RESULTS.with_name(RESULTS.name + suffix)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DS_ACCELERATOR": "cpu"}
    data_dir = ROOT / "runs" / "data" / f"python_docs_v{args.vocab}"
    if not (data_dir / "data.idx").is_file():
        subprocess.run([sys.executable, str(ROOT / "launch" / "prepare_data.py"), "--input",
                        str(ROOT / "data" / "raw" / "python_docs.jsonl"), "--output", str(data_dir),
                        f"tokenize.vocab_size={args.vocab}"], check=True, env=env, cwd=ROOT)
    sweep_dir = work / "sweep"
    if args.fresh:
        shutil.rmtree(sweep_dir, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "configs" / "sweep_cpu.yaml").read_text())
    base["data"]["paths"] = [str((data_dir / "data").resolve())]
    base["data"]["tokenizer"] = str((data_dir / "tokenizer.model").resolve())
    base["model"].update(vocab_size=args.vocab, seq_len=args.seq_len)  # the sweep designs each point's shape
    (work / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))

    before, t0 = _uptime(), time.monotonic()
    print(f"uptime before: {before}", flush=True)
    cmd = [sys.executable, str(ROOT / "launch" / "sweep.py"), "--budgets", *args.budgets, "--sizes-per-budget",
           str(args.sizes), "--spread", str(args.spread), "--shapes", args.shapes, "--seeds", str(args.seeds),
           "--config", str(work / "base.yaml"), "--out", str(sweep_dir)]
    cmd += ["--fit-only"] if args.fit_only else []
    rc = subprocess.call(cmd, env=env, cwd=ROOT)
    wall, after = time.monotonic() - t0, _uptime()
    print(f"uptime after: {after}; wall {wall:.0f} s; sweep.py exit {rc}", flush=True)

    results.mkdir(parents=True, exist_ok=True)
    for name in ("law.json", "report.md", "isoflop.png", "sweep.json"):
        if (sweep_dir / name).is_file():
            shutil.copy(sweep_dir / name, results / name)
        else:  # e.g. no law.json when the fit found no law: an old copy would contradict the report
            (results / name).unlink(missing_ok=True)
    if args.fit_only:
        summary_path = results / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary["refit"] = {"exit_status": rc, "uptime": after, "code": "launch/sweep.py --fit-only at this commit"}
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
        return rc
    points = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("points/*/done.json"))]
    summary = {"command": " ".join(Path(c).name if c == sys.executable else c for c in cmd[1:]),
               "exit_status": rc, "wall_s": wall, "uptime_before": before, "uptime_after": after,
               "cpus": os.cpu_count(), "points_finished": len(points),
               "point_wall_s": {p["name"]: p["wall_s"] for p in points}}
    (results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
