"""Bad inputs to launch/plot.py (issue 29), each run as a real subprocess and classified as the other benches do.

    python bench/hardening/plot.py [--repo DIR] [--json OUT]

clear: non-zero exit, one line on stderr, no traceback, naming what it must (the file, the flag); an accepted input
(expect_ok): exit 0 and the image written. traceback: a Python traceback reached the user. silent: exit 0 where the
input should have been refused, or no image where one was promised. late: refused without naming the culprit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parents[2]

ROWS = [{"step": s, "tokens": 1024 * s, "loss": 6.0 - 0.1 * s, "lr": 1e-3, "tokens_per_s": 900.0, "mfu": 0.1}
        for s in range(1, 11)] + [{"step": 10, "tokens": 10240, "eval_loss": 5.2}]


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]
    """Writes the case's files under the folder; returns plot.py's arguments."""
    names: tuple[str, ...] = ()
    expect_ok: bool = False


def run_dir(d: Path, metrics: bytes | str | None = None, rows=None) -> Path:
    r = d / "run"
    r.mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        (r / "metrics.jsonl").write_bytes(metrics if isinstance(metrics, bytes) else metrics.encode())
    elif rows is not None:
        (r / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return r


def chain_dir(d: Path, report: bytes | str | dict | list) -> Path:
    c = d / "chain"
    c.mkdir()
    data = report if isinstance(report, (bytes, str)) else json.dumps(report)
    (c / "chain_report.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    return c


def runs(metrics=None, rows=None, out="p.png"):
    return lambda d: [str(run_dir(d, metrics, rows)), "--out", str(d / out)]


def chain(report, out="p.png"):
    return lambda d: ["--chain", str(chain_dir(d, report)), "--out", str(d / out)]


def metrics_dir(d):
    r = d / "run"
    (r / "metrics.jsonl").mkdir(parents=True)
    return [str(r), "--out", str(d / "p.png")]


def out_dir_is_dir(d):
    (d / "img.png").mkdir()
    return [str(run_dir(d, rows=ROWS)), "--out", str(d / "img.png")]


def chain_report_dir(d):
    (d / "chain" / "chain_report.json").mkdir(parents=True)
    return ["--chain", str(d / "chain"), "--out", str(d / "p.png")]


GOOD_STAGES = {"sft": {"checker_accuracy": 0.5, "eval_loss": 2.0}, "rm": {"pairwise_accuracy": 0.7}}
CASES = [
    Case("valid run", runs(rows=ROWS), expect_ok=True),
    Case("valid chain", chain({"stages": GOOD_STAGES}), expect_ok=True),
    Case("run dir missing", lambda d: [str(d / "nope"), "--out", str(d / "p.png")], ("nope",)),
    Case("run dir is a file", lambda d: [str((d / "f").write_text("x") and d / "f"), "--out", str(d / "p.png")],
         ("f",)),
    Case("metrics.jsonl missing", lambda d: [str(run_dir(d)), "--out", str(d / "p.png")], ("metrics.jsonl",)),
    Case("metrics.jsonl empty", runs(metrics=""), ("metrics.jsonl",)),
    Case("metrics.jsonl garbage line", runs(metrics=json.dumps(ROWS[0]) + "\n{not json\n"), ("metrics.jsonl",)),
    Case("metrics.jsonl binary", runs(metrics=b"\xff\xfe\x00\x01" * 50), ("metrics.jsonl",)),
    Case("metrics.jsonl is a directory", metrics_dir, ("metrics.jsonl",)),
    Case("metrics.jsonl rows are numbers", runs(metrics="1\n2\n3\n"), ("metrics.jsonl",)),
    Case("metrics.jsonl rows are lists", runs(metrics="[1, 2]\n[3]\n"), ("metrics.jsonl",)),
    Case("metrics.jsonl without step", runs(rows=[{"loss": 1.0}]), ("metrics.jsonl",)),
    Case("metrics.jsonl loss a string", runs(rows=[{**r, "loss": "high"} for r in ROWS]), expect_ok=True),
    Case("metrics.jsonl loss NaN and inf", runs(metrics="".join(
        json.dumps({**r, "loss": float("nan") if i % 2 else float("inf")}) + "\n" for i, r in enumerate(ROWS))),
         expect_ok=True),
    Case("metrics.jsonl step a string", runs(rows=[{**r, "step": "one"} for r in ROWS]), expect_ok=True),
    Case("metrics.jsonl one row only", runs(rows=ROWS[:1]), expect_ok=True),
    Case("--out unknown type", runs(rows=ROWS, out="p.xyz"), ("--out", "p.xyz")),
    Case("--out in a missing folder", runs(rows=ROWS, out="no/such/p.png"), ("--out",)),
    Case("--out is a directory", out_dir_is_dir, ("--out", "img.png")),
    Case("--out missing", lambda d: [str(run_dir(d, rows=ROWS))], ("--out",)),
    Case("no runs and no --chain", lambda d: ["--out", str(d / "p.png")], ("--chain",)),
    Case("runs and --chain together", lambda d: [str(run_dir(d, rows=ROWS)), "--chain", str(d), "--out",
                                                 str(d / "p.png")], ("--chain",)),
    Case("--chain: no chain_report.json", lambda d: ["--chain", str(d), "--out", str(d / "p.png")],
         ("chain_report.json",)),
    Case("--chain: report truncated", chain('{"stages": {"sft": {"chec'), ("chain_report.json",)),
    Case("--chain: report binary", chain(b"\x80\x81\xff" * 30), ("chain_report.json",)),
    Case("--chain: report a list", chain([1, 2]), ("chain_report.json",)),
    Case("--chain: stages empty", chain({"stages": {}}), ("chain_report.json",)),
    Case("--chain: a stage is a number", chain({"stages": {"sft": 3, "rm": {"pairwise_accuracy": 0.7}}}),
         ("chain_report.json", "sft")),
    Case("--chain: a metric is a string", chain({"stages": {"sft": {"checker_accuracy": "0.5"}}}), expect_ok=True),
    Case("--chain: report is a directory", chain_report_dir, ("chain_report.json",)),
]


def classify(case: Case, d: Path, r: subprocess.CompletedProcess, argv: list[str]) -> tuple[str, str]:
    err = r.stderr.strip()
    if "Traceback (most recent call last)" in err:
        return "traceback", err.splitlines()[-1][:200]
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    if case.expect_ok:
        if r.returncode != 0:
            return "late", f"refused a valid input (exit {r.returncode}): {err[-200:]}"
        return ("clear", "ok") if out and out.is_file() and out.stat().st_size > 0 else ("silent", "no image")
    if r.returncode == 0:
        return "silent", f"exit 0: {r.stdout.strip()[-160:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    missing = [n for n in case.names if n.lower() not in err.lower()]
    if missing or len(lines) > 1:
        return "late", f"({len(lines)} lines, missing {missing}) {err[-200:]}"
    return "clear", lines[-1][:200]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=HERE, help="checkout whose launch/plot.py is run")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    results, counts = [], {}
    with tempfile.TemporaryDirectory(prefix="plot-faults-") as root:
        for i, case in enumerate(CASES, 1):
            d = Path(root) / f"case{i}"
            d.mkdir()
            argv = case.setup(d)
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, str(args.repo / "launch/plot.py"), *argv], capture_output=True,
                               text=True, cwd=d, timeout=120)
            verdict, detail = classify(case, d, r, argv)
            counts[verdict] = counts.get(verdict, 0) + 1
            results.append({"n": i, "case": case.name, "verdict": verdict, "detail": detail,
                            "seconds": round(time.monotonic() - t0, 1)})
            print(f"[{i}/{len(CASES)}] {verdict:<10} {case.name}: {detail}", flush=True)
    print(f"repo {args.repo}: {len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.json:
        args.json.write_text(json.dumps({"repo": str(args.repo), "counts": counts, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
