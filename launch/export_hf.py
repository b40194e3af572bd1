"""Export a checkpoint of any layout (or an alignment stage directory) as a Hugging Face model directory.

    python launch/export_hf.py runs/X/checkpoints/step_00000100 OUT_DIR [--force] [--max-shard-size 5GB]

OUT_DIR then loads with `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `AutoTokenizer.from_pretrained(OUT_DIR)`,
no custom code (llm/hf/export.py): a LlamaForCausalLM, or a MixtralForCausalLM for an MoE model (one with shared
experts or experts in only some blocks is refused, naming the field). Exit 2, with one line, on a user mistake.

OUT_DIR may not be, contain or lie inside the checkpoint or its tokenizer. It is written beside itself
(.OUT_DIR.partial) and moved into place when complete, so a failed or killed export leaves an earlier OUT_DIR as it
was; --force replaces only an earlier export (its .llm-forge-output.json says so) holding nothing else
(typed_yaml/output_dir.py). Two exports to one OUT_DIR at once: the second is refused, naming the first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from typed_yaml import log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a step_XXXXXXXX directory or an alignment stage directory")
    ap.add_argument("out_dir", type=Path, help="the Hugging Face model directory to write")
    ap.add_argument("--force", action="store_true", help="replace an earlier export in OUT_DIR")
    ap.add_argument("--max-shard-size", default="5GB", help="safetensors shard size past which weights are split "
                    "with an index (default: %(default)s)")
    args = ap.parse_args(argv)
    from llm.hf.export import export_hf
    from llm.train.checkpoint_reader import open_checkpoint
    from typed_yaml.output_dir import staged_output
    tokenizer = open_checkpoint(args.checkpoint).tokenizer  # may lie outside the checkpoint (data.tokenizer)
    inputs = [("checkpoint", args.checkpoint), ("tokenizer", tokenizer)]
    with staged_output(args.out_dir, "export_hf.py", inputs, force=args.force,
                       source=str(args.checkpoint.resolve())) as tmp:
        export_hf(args.checkpoint, tmp, max_shard_size=args.max_shard_size)
    log.info(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
