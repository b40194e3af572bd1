"""Write passkey-retrieval training documents (llm/eval/passkey.py's template, with the answer) as JSONL, the input
of launch/prepare_data.py, for a model too small to learn retrieval from its corpus alone:

    python launch/passkey_data.py --out runs/data/passkey_256.jsonl --documents 4000 --max-sentences 28

Each document is the evaluation's prompt text (intro, filler sentences, the needle at a uniform random depth, the
question) followed by " NNNNN."; ~7 tokens per filler sentence with the bundled tokenizer. Exit 2, with one line, on
a user mistake.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from typed_yaml.errors import ConfigError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    ap.add_argument("--documents", type=int, default=4000, help="how many (default: %(default)s)")
    ap.add_argument("--min-sentences", type=int, default=2, help="filler sentences, at least (default: %(default)s)")
    ap.add_argument("--max-sentences", type=int, default=28,
                    help="filler sentences, at most (default: %(default)s: documents of up to ~250 tokens)")
    ap.add_argument("--digits", type=int, default=5, help="digits of a key (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = ap.parse_args(argv)
    if args.documents < 1 or not 0 <= args.min_sentences <= args.max_sentences or not 1 <= args.digits <= 20:
        raise ConfigError("need --documents >= 1, 0 <= --min-sentences <= --max-sentences and 1 <= --digits <= 20")
    from llm.eval.passkey import passkey_documents, write_passkey_jsonl
    out = write_passkey_jsonl(args.out, passkey_documents(args.documents, args.min_sentences, args.max_sentences,
                                                          args.seed, args.digits))
    print(f"wrote {args.documents} passkey documents to {out}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
