"""Rebuild the bundled evaluation tasks (llm/eval/tasks/) from the held-out split of a prepared corpus.

    python launch/prepare_data.py --input data/raw/python_docs.jsonl --output runs/data/python_docs
    python -m llm.eval.make_tasks --data runs/data/python_docs [--valid-fraction 0.05] [--seed 0]

Which documents are held out is read from the training data itself: a run holds out the last
`data.valid_fraction` of each dataset's token stream (data_pipeline/gpt_dataset.py, `PackedDataset`), so the
documents of DIR/data.bin/.idx that start at or after that offset were never trained on (the one straddling it
is partly trained and is left out). Each document's text is its tokens decoded, checked to re-encode to the very
same ids, so it is the text the model would have seen. With configs/debug.yaml (valid_fraction 0.05) this gives
the last 13 of the corpus's 335 kept documents.

Written: python_docs_heldout.jsonl ({id, text}: one row per held-out document, for the rolling perplexity task)
and python_docs_next_line.jsonl ({id, context, choices, label}: the multiple-choice next-line task; the true
next line of a held-out document among distractor lines drawn from the other held-out documents).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from typed_yaml import log
from typed_yaml.files import read_jsonl

TASK_DIR = Path(__file__).resolve().parent / "tasks"
HELDOUT_FILE = "python_docs_heldout.jsonl"
NEXT_LINE_FILE = "python_docs_next_line.jsonl"
# The multiple-choice items: a context of at least CONTEXT_CHARS characters of whole preceding lines (a few
# dozen tokens, far inside any seq_len), a next line of LINE_CHARS characters, N_CHOICES choices, at most
# ITEMS_PER_DOC items per document so that no single long document dominates.
CONTEXT_CHARS = 300
LINE_CHARS = (20, 120)
N_CHOICES = 4
ITEMS_PER_DOC = 20


def held_out_documents(data_dir: str | Path, valid_fraction: float) -> list[dict]:
    """[{id, text}] of the documents wholly inside the valid split of DIR/data, in stream order."""
    from data_pipeline.hf_tokenizer import load_tokenizer, tokenizer_file
    from data_pipeline.indexed import IndexedDataset

    root = Path(data_dir)
    ds = IndexedDataset(root / "data")
    tok = load_tokenizer(tokenizer_file(root))
    total = ds.num_tokens()
    valid_start = total - int(round(total * valid_fraction))  # PackedDataset's split, to the token
    names = _source_ids(root)
    docs, offset = [], 0
    for i in range(len(ds)):
        ids = [int(t) for t in ds[i]]
        if offset >= valid_start:
            if ids[-1] != tok.eos_id:
                raise ValueError(f"{root}: document {i} does not end with EOS")
            text = tok.decode(ids[:-1])
            if tok.encode(text) != ids[:-1]:
                raise ValueError(f"{root}: document {i} does not decode to a text that re-encodes to its ids")
            docs.append({"id": names.get(text, f"doc_{i}"), "text": text})
        offset += len(ids)
    return docs


def _source_ids(root: Path) -> dict[str, str]:
    """text -> source id of the kept documents (the pipeline's ingest shards), to name the held-out ones."""
    out = {}
    for f in sorted((root / "work" / "ingest").glob("shard_*[0-9].jsonl")):
        for rec in read_jsonl(f, what="ingest shard", row="a document"):
            out[rec["text"]] = rec["id"]
    return out


def _candidate_lines(text: str) -> list[tuple[int, str]]:
    lines = text.split("\n")
    seen_chars, out = 0, []
    for j, line in enumerate(lines):
        stripped = line.strip()
        decoration = set(stripped) <= set("=-~*^#+|_ .:")
        if seen_chars >= CONTEXT_CHARS and LINE_CHARS[0] <= len(line) <= LINE_CHARS[1] and not decoration:
            out.append((j, line))
        seen_chars += len(line) + 1
    return out


def next_line_items(docs: list[dict], seed: int) -> list[dict]:
    """Multiple-choice items: context (whole lines ending in a newline), choices (next-line candidates), label."""
    rng = random.Random(seed)
    candidates = [_candidate_lines(d["text"]) for d in docs]
    counts: dict[str, int] = {}
    for c in candidates:
        for _, line in c:
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
    items = []
    for n, doc in enumerate(docs):
        lines = doc["text"].split("\n")
        # A line that occurs twice is no test of the context; distractors come from the other documents only.
        own = [(j, line) for j, line in candidates[n] if counts[line.strip()] == 1]
        others = [line for m, c in enumerate(candidates) if m != n for _, line in c if counts[line.strip()] == 1]
        for j, line in sorted(rng.sample(own, min(ITEMS_PER_DOC, len(own)))):
            start = j
            while start > 0 and sum(len(x) + 1 for x in lines[start:j]) < CONTEXT_CHARS:
                start -= 1
            choices = [line] + rng.sample(others, N_CHOICES - 1)
            rng.shuffle(choices)
            items.append({"id": f"{doc['id']}:{j}", "context": "\n".join(lines[start:j]) + "\n",
                          "choices": choices, "label": choices.index(line)})
    return items


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a prepare_data.py output folder (data.bin/.idx)")
    ap.add_argument("--valid-fraction", type=float, default=0.05, help="the run's data.valid_fraction")
    ap.add_argument("--seed", type=int, default=0, help="seeds the items and distractors (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=TASK_DIR, help="where to write the jsonl files")
    args = ap.parse_args(argv)
    docs = held_out_documents(args.data, args.valid_fraction)
    write_jsonl(args.out / HELDOUT_FILE, docs)
    items = next_line_items(docs, args.seed)
    write_jsonl(args.out / NEXT_LINE_FILE, items)
    log.info(f"{len(docs)} held-out documents, {len(items)} next-line items -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
