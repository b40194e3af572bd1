"""Per-rank bytes of parameters, gradients and optimizer state under ZeRO 0-3 at DP2 and DP4: measured on real
DeepSpeed engines vs the ZeRO paper's formulas (Rajbhandari et al. 2019, arXiv:1910.02054, §3.1, K = 12).

    python bench/bench_zero_memory.py [--dp 2 4] [--json results.json]

Launches tests/parallel/zero_memory_probe.py once per DP degree under `deepspeed --num_gpus N` (CPU and gloo
when there is no GPU), bf16, and prints rank 0's table in units of Ψ bytes, "measured/paper", at two moments
of a step with two micro-batches: "accumulating" (after the first micro-batch's backward) and "boundary" (after
the last one's backward, before the optimizer step). Then every rank's difference from the paper, in bytes,
next to the DeepSpeed-adjusted formula's. Why they differ is in llm/cost/zero.py's docstring.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parallel.memory import format_table  # noqa: E402
from tests.parallel.launcher_utils import free_port, launch_env  # noqa: E402

PROBE = ROOT / "tests" / "parallel" / "zero_memory_probe.py"


def measure(dp: int, out: Path) -> list[dict]:
    cmd = ["deepspeed", "--num_gpus", str(dp), "--master_port", str(free_port()), str(PROBE), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(), capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}\n{(proc.stdout + proc.stderr)[-4000:]}")
    return json.loads(out.read_text())


def differences(rows: list[dict]) -> str:
    lines = [f"{'dp':>2} {'zero':>4} {'point':>12} {'rank':>4} | measured − paper (B): {'params':>8} {'grads':>8} "
             f"{'optim':>8} | measured − DeepSpeed formula (B)"]
    for r in rows:
        paper = [r["measured"][k] - r["paper"][k] for k in ("params", "grads", "optimizer")]
        ds = [r["measured"][k] - r["deepspeed"][k] for k in ("params", "grads", "optimizer")]
        lines.append(f"{r['dp']:>2} {r['zero_stage']:>4} {r['point']:>12} {r['rank']:>4} | {'':21}"
                     + " ".join(f"{d:>8}" for d in paper) + f" | {ds}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dp", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--json", type=Path, help="also write every rank's rows here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dp in args.dp:
            rows += measure(dp, Path(tmp) / f"dp{dp}.json")
    psi = rows[0]["n_params"]
    print(f"ZeRO model-state bytes per rank, bf16 + AdamW, Ψ = {psi:,} parameters "
          f"(optimizer classes: {sorted({r['optimizer_class'] for r in rows})})")
    print(format_table([r for r in rows if r["rank"] == 0]))
    print()
    print(differences(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
