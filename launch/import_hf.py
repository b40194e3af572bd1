"""Import a Llama-family (Llama, Mistral, Mixtral) Hugging Face model directory as one of our checkpoints.

    python launch/import_hf.py HF_DIR OUT_DIR [--force]

writes OUT_DIR/step_00000000 (model.pt, config.yaml, tokenizer files, trainer_state.json; llm/hf/import_.py), which
`checkpoint.init_from=` and launch/export_hf.py accept. Architectures our model does not implement are refused
with one line naming the field or tensor. Exit 2 on a user mistake.

OUT_DIR may not be, contain or lie inside HF_DIR. It is written beside itself (.OUT_DIR.partial) and moved into
place when complete, so a killed import neither leaves a half checkpoint nor blocks its rerun; --force replaces only
an earlier import (its .llm-forge-output.json says so) holding nothing else, never a training run started in it
(typed_yaml/output_dir.py). Two imports to one OUT_DIR at once: the second is refused, naming the first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from typed_yaml import log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir", type=Path, help="a directory with config.json, safetensors weights and tokenizer.json")
    ap.add_argument("out_dir", type=Path, help="where to write step_00000000/")
    ap.add_argument("--force", action="store_true", help="replace an earlier import in OUT_DIR")
    args = ap.parse_args(argv)
    from typed_yaml.output_dir import check_not_an_input, staged_output
    inputs = [("HF directory", args.hf_dir)]
    check_not_an_input(args.out_dir, inputs)  # before torch loads: a second, not a minute
    from llm.hf.import_ import import_hf
    with staged_output(args.out_dir, "import_hf.py", inputs, force=args.force,
                       source=str(args.hf_dir.resolve())) as tmp:
        step = import_hf(args.hf_dir, args.out_dir, staging=tmp)
    log.info(f"wrote {step}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
