"""Import a Llama-family Hugging Face model directory as one of our checkpoints.

    python launch/import_hf.py HF_DIR OUT_DIR [--force]

writes OUT_DIR/step_00000000 (model.pt, config.yaml, tokenizer files, trainer_state.json; llm/hf/import_.py), which
`checkpoint.init_from=` and launch/export_hf.py accept. Architectures our model does not implement are refused
with one line naming the field or tensor. Exit 2 on a user mistake.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir", type=Path, help="a directory with config.json, safetensors weights and tokenizer.json")
    ap.add_argument("out_dir", type=Path, help="where to write step_00000000/")
    ap.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    args = ap.parse_args(argv)
    from llm.hf.import_ import import_hf
    try:
        step = import_hf(args.hf_dir, args.out_dir, force=args.force)
    except (ValueError, OSError) as e:  # ConfigError is a ValueError; the tokenizer reader raises these two
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
