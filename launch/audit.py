"""Memorization audit of a checkpoint against the data folder it was trained on.

    python launch/audit.py --checkpoint runs/debug/checkpoints/step_00000200 --data runs/data/python_docs \\
        [--out audit.json] [--plot audit.png] [--k 50] [--candidates 1000] [--docs-per-bucket 100] [--eval EVAL]

Reports, per repetition bucket of the canaries planted by the data pipeline (canaries.enabled, DIR/canaries.json)
and for the never-inserted held-out canaries: mean exposure (Carlini et al. 2019; skew-normal extrapolation, and
the rank among --candidates sampled candidates) and the verbatim extraction rate; then training-document
memorization (PaLM 2 / Carlini et al. 2022: a k-token prompt, k greedy tokens) by copies in the corpus, beside
held-out documents; with --eval, the eval set's 13-gram overlap with the training data. The checkpoint may be any
layout's step directory (its consolidated model.pt), a run's out_dir (its latest), or an alignment stage. Progress
(sequences done, rate, ETA) shows as a bar on a terminal and as a line every ~30 s on stderr otherwise, and in
OUT.progress.log with --out. A user error prints one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


from typed_yaml.args import OneLineParser
from typed_yaml import log


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory (any layout) or run out_dir")
    ap.add_argument("--data", required=True, type=Path, help="the prepared data folder (launch/prepare_data.py)")
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON (default: print them)")
    ap.add_argument("--plot", type=Path, default=None, help="write the model-card figure here (PNG)")
    ap.add_argument("--k", type=int, default=None, help="memorization prompt/target tokens (default: 50, or what "
                    "fits the model's seq_len)")
    ap.add_argument("--candidates", type=int, default=1000, help="reference candidates per canary kind")
    ap.add_argument("--docs-per-bucket", type=int, default=100, help="documents tested per repetition bucket")
    ap.add_argument("--eval", type=Path, default=None, help="an evaluation set (jsonl/text): its n-gram overlap")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for flag, value in (("--candidates", args.candidates), ("--docs-per-bucket", args.docs_per_bucket),
                        ("--k", args.k if args.k is not None else 1)):
        if value < 1:
            ap.error(f"{flag}={value} must be >= 1")
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            ap.error(f"{flag} {path}: {'is a folder' if path.is_dir() else 'its folder does not exist'}")
    if args.eval is not None and not args.eval.exists():
        ap.error(f"--eval {args.eval} does not exist")

    from llm.audit.overlap import eval_overlap
    from llm.audit.run import AuditSettings, audit, progress_factory
    bar = progress_factory(args.out.with_suffix(".progress.log") if args.out else None)
    results = audit(args.checkpoint, args.data, AuditSettings(args.candidates, args.k, args.docs_per_bucket, args.seed),
                    bar)
    if args.eval is not None:
        results["eval_overlap"] = eval_overlap(args.eval, args.data, bar)
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
        log.info(f"wrote {args.out}")
    else:
        log.info(text)
    if args.plot:
        from llm.audit.figure import audit_figure
        audit_figure(results, f"Memorization audit: {results['checkpoint']}").savefig(args.plot)
        log.info(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
