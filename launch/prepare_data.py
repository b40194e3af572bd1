"""Prepare a training-ready dataset: raw documents -> filtered, deduplicated, tokenized .bin/.idx.

    python launch/prepare_data.py --input a.jsonl [b.jsonl ...] --output DIR
    python launch/prepare_data.py --config configs/data/default.yaml --output DIR \\
        --input data/raw/python_docs.jsonl filters.c4.enabled=true dedup.minhash.bands=20

Without --config, configs/data/default.yaml is used. Trailing ``key.sub=value`` arguments
override any config field. Pretraining then reads ``data.paths: [DIR/data]``.

Multi-node: run the same command in every SLURM array task (or rank); the task index and count
come from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or RANK/WORLD_SIZE (or shards.task_index/
shards.task_count). Tasks split the shards and wait for each other on marker files; task 0
clusters duplicates, trains the tokenizer and merges. ``--stage`` runs a single stage.

Read what was dropped and why (each row: source file and record index, snippet, the rule's
measured value against its threshold; near duplicates beside the kept document they name):
    python launch/prepare_data.py inspect DIR [--rule minhash_dedup] [--not-met] [--limit 20] [--json]

Blend several prepared datasets (report only, the mixing happens at training time):
    python launch/prepare_data.py blend --paths DIR1/data DIR2/data --weights 0.7 0.3 --seq-len 256
"""
from __future__ import annotations

import sys

from data_pipeline import cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "blend":
        return cli.blend(argv[1:])
    if argv and argv[0] == "inspect":
        return cli.inspect(argv[1:])
    return cli.prepare(argv, __doc__)


if __name__ == "__main__":
    from launch.cli import run
    run(main)
