"""The `prepare_data.py` command (launch/prepare_data.py is its shim): prepare a dataset, `inspect` its drops, report a
`blend`. Every mistake is a DataError (one line, exit 2, through launch/cli.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_pipeline.config import load_data_config
from data_pipeline.errors import DataError
from data_pipeline.pipeline import PIPELINE_STAGES, run, summary
from typed_yaml import ConfigError
from typed_yaml.files import read_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "data" / "default.yaml"


def prepare(argv: list[str], doc: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=None, help="input files or folders (jsonl[.gz|.zst], parquet, "
                    "folder of .txt, datasets save_to_disk folder)")
    ap.add_argument("--output", default=None, help="output folder DIR")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="data config YAML (default: %(default)s)")
    ap.add_argument("--tokenizer", default=None, help="existing tokenizer: a sentencepiece .model, a "
                    "tokenizer.json or a Hugging Face model directory (default: train one)")
    ap.add_argument("--stage", default="all", choices=("all",) + PIPELINE_STAGES)
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    ap.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if args.input:
        overrides.append("inputs=" + json.dumps(args.input))
    if args.output:
        overrides.append("output=" + json.dumps(args.output))
    if args.tokenizer:
        overrides.append("tokenize.tokenizer=" + json.dumps(args.tokenizer))
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_data_config(args.config, overrides)  # DataErrors: one line each, exit 2 (launch/cli.py)
    report = run(cfg, args.stage)
    if report is not None:
        print(summary(report))
    return 0


def blend(argv: list[str]) -> int:
    from data_pipeline.blend import blend_report

    ap = argparse.ArgumentParser(prog="prepare_data.py blend", description="report a weighted blend")
    ap.add_argument("--paths", nargs="+", required=True, help="dataset prefixes (DIR/data)")
    ap.add_argument("--weights", nargs="+", type=float, required=True)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--samples", type=int, default=None, help="blended samples (default: sum of sources)")
    ap.add_argument("--output", default=None, help="write the report here as JSON")
    args = ap.parse_args(argv)
    if len(args.weights) != len(args.paths):
        raise DataError(f"--weights has {len(args.weights)} values for {len(args.paths)} --paths")
    if args.output and Path(args.output).is_dir():
        raise DataError(f"--output {args.output} is a folder; pass the JSON file to write")
    try:
        report = blend_report(args.paths, args.weights, args.seq_len, args.samples)
    except FileNotFoundError as exc:  # a --paths prefix with no .bin/.idx (the rest are DataErrors)
        raise DataError(f"--paths: {exc.filename or exc}: no such file") from None
    text = json.dumps(report, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


def _check_rule(root: str, rule: str) -> None:
    """A --rule that names no reason of this folder and none of its report's stages is a typo, not zero drops."""
    from data_pipeline.report import read_drops

    reasons = {row["reason"] for row in read_drops(root)}
    try:
        stages = set(read_json(Path(root) / "report.json", dict, "report").get("stages", {}))
    except ConfigError:  # no report (yet), or a damaged one: the drops' reasons alone decide
        stages = set()
    known = reasons | {r.split(".")[0] for r in reasons} | stages
    if rule not in known and not any(r.startswith(rule + ".") for r in reasons):
        raise DataError(f"--rule {rule}: no drop of {root} has that reason or stage; its reasons: "
                        + ", ".join(sorted(reasons) or ["none"]))


def inspect(argv: list[str]) -> int:
    from data_pipeline.report import inspect_drops, read_drops

    ap = argparse.ArgumentParser(prog="prepare_data.py inspect", description="read DIR/dropped/ with the evidence "
                                 "of every drop")
    ap.add_argument("dir", help="a folder written by prepare_data.py --output")
    ap.add_argument("--rule", default=None, help="a reason (minhash_dedup.near_duplicate) or its stage "
                    "(minhash_dedup, gopher_quality)")
    ap.add_argument("--not-met", action="store_true", help="only drops whose value does not meet their threshold "
                    "(unverified near duplicates below the LSH midpoint)")
    ap.add_argument("--limit", type=int, default=20, help="rows to print (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the matching rows as jsonl instead")
    args = ap.parse_args(argv)
    if args.rule is not None:
        _check_rule(args.dir, args.rule)
    if args.json:
        from data_pipeline.report import below_threshold

        for row in read_drops(args.dir, args.rule):
            if not args.not_met or below_threshold(row):
                print(json.dumps(row, ensure_ascii=False))
    else:
        print(inspect_drops(args.dir, args.rule, args.limit, args.not_met))
    return 0
