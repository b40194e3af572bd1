"""The memorization audit on the bundled corpus: prepare it with canaries, train, audit, record per bucket.

    python bench/bench_audit.py [--work runs/bench_audit] [--out bench/results_audit.json] [--small] [--steps N]

Runs launch/prepare_data.py (configs/data/default.yaml with canaries.enabled=true: 10 canaries of each kind
per bucket of 1, 4, 16, 64 copies, as many held out), launch/pretrain.py on configs/debug.yaml (or, --small,
a 1.4M-parameter 2-layer d_model-128 model at seq_len 128 for a loaded CPU), then launch/audit.py on the last
checkpoint; each step is skipped when its output exists, so an interrupted bench resumes. Writes the per-bucket
exposure and extraction rate (inserted vs held out) and the document-memorization rates to --out, and the
figure beside it. Expected: held-out canaries at chance (1/ln 2 ≈ 1.44 bits, no extraction), inserted ones
rising with their copies.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.n_layers=2", "model.d_model=128", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=384",
         "model.seq_len=128", "train.micro_batch_size=16", "checkpoint.every=50", "checkpoint.keep=4"]


def run(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "data" / "raw" / "python_docs.jsonl"))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_audit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results_audit.json")
    ap.add_argument("--small", action="store_true", help="the 1.4M-parameter model instead of debug.yaml's 5M")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=1000)
    args = ap.parse_args()
    data, out_dir = args.work / "data", args.work / ("small" if args.small else "debug")
    if not (data / "report.json").is_file():
        run("launch/prepare_data.py", "--input", args.corpus, "--output", str(data), "--no-progress",
            "canaries.enabled=true")
    if not (out_dir / "checkpoints" / f"step_{args.steps:08d}").is_dir():
        run("launch/pretrain.py", "--config", "configs/debug.yaml", f"data.paths=[{data / 'data'}]",
            f"data.tokenizer={data / 'tokenizer.model'}", f"out_dir={out_dir}", f"train.max_steps={args.steps}",
            *(SMALL if args.small else []))
    audit = args.out.with_name(args.out.stem + "_full.json")
    run("launch/audit.py", "--checkpoint", str(out_dir / "checkpoints" / f"step_{args.steps:08d}"), "--data",
        str(data), "--out", str(audit), "--plot", str(args.out.with_suffix(".png")),
        "--candidates", str(args.candidates))
    full = json.loads(audit.read_text())
    keep = ("repeats", "copies_in_train", "exposure_mean", "exposure_sampled_mean", "extraction_rate")
    summary = {"model": "small" if args.small else "configs/debug.yaml", "steps": args.steps,
               "buckets": {k: {f: b[f] for f in keep} | {"kinds": b["kinds"]} for k, b in full["buckets"].items()},
               "exposure": full["exposure"], "memorization": full["memorization"]}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: (b["exposure_mean"], b["extraction_rate"]) for k, b in summary["buckets"].items()}))


if __name__ == "__main__":
    main()
