"""Export a checkpoint of any layout (or an alignment stage directory) as a Hugging Face model directory.

    python launch/export_hf.py runs/X/checkpoints/step_00000100 OUT_DIR [--force] [--max-shard-size 5GB]

OUT_DIR then loads with `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `AutoTokenizer.from_pretrained(OUT_DIR)`,
no custom code (llm/hf/export.py). Exit 2, with one line, on a user mistake.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a step_XXXXXXXX directory or an alignment stage directory")
    ap.add_argument("out_dir", type=Path, help="the Hugging Face model directory to write")
    ap.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    ap.add_argument("--max-shard-size", default="5GB", help="safetensors shard size past which weights are split "
                    "with an index (default: %(default)s)")
    args = ap.parse_args(argv)
    from llm.hf.export import export_hf
    try:
        out = export_hf(args.checkpoint, args.out_dir, force=args.force, max_shard_size=args.max_shard_size)
    except (ValueError, OSError) as e:  # ConfigError is a ValueError; the tokenizer readers raise these two
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
