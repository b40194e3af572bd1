"""Consolidate a checkpoint of any layout into one single-process model file.

    python launch/consolidate.py runs/X/checkpoints/step_00000100 --output model.pt [--dtype bf16]

Every checkpoint written by launch/pretrain.py already holds the consolidated weights (`model.pt`, gathered at save
time across tensor-parallel shards, pipeline stages and ZeRO-3 partitions). For a DeepSpeed pipeline checkpoint
without one, the per-layer files are merged (parallel/pipeline_checkpoint.py). The directory is read by
llm/train/checkpoint_reader.py `open_checkpoint`, and the result checked by loading it into the model described by
the checkpoint's `config.yaml`, so what this writes is what debug mode (`checkpoint.init_from=`) and
`Transformer.generate()` load. Exit 2 on a user mistake.
"""
from __future__ import annotations

import argparse
from pathlib import Path


from llm.config import ConfigError
from typed_yaml import log


def consolidate(step_dir: Path) -> dict:
    """The llm/model.py state dict of a checkpoint directory; ConfigError if it holds none we can read."""
    from llm.train.checkpoint_reader import open_checkpoint

    if not (step_dir / "config.yaml").is_file():
        raise ConfigError(f"{step_dir} is not a checkpoint directory of launch/pretrain.py (no config.yaml)")
    # The model section alone (the reader's): data.paths and the rest of the run may name files long moved or gone.
    ckpt = open_checkpoint(step_dir)
    state = None
    if ckpt.pipeline_dir is not None:
        from parallel.pipeline_checkpoint import load_pipeline_checkpoint
        state = load_pipeline_checkpoint(ckpt.pipeline_dir, ckpt.model)
    return ckpt.build_model(state).state_dict()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a step_XXXXXXXX directory")
    ap.add_argument("--output", type=Path, required=True, help="where to write the single-process state dict")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = ap.parse_args(argv)
    from typed_yaml.output_dir import check_not_an_input
    # Never an input: --output step/model.pt with --dtype bf16 would round the checkpoint's own weights.
    check_not_an_input(args.output, [("checkpoint", args.checkpoint)], flag="--output")
    if args.output.is_dir():
        raise ConfigError(f"--output {args.output} is a directory: name the file to write, e.g. "
                          f"{args.output / 'model.pt'}")
    import torch
    state = consolidate(args.checkpoint)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    state = {k: v.to(dtype) for k, v in state.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    from typed_yaml.disk import disk_full_as
    from typed_yaml.files import atomic_path
    # One temporary file per writer: the last one wins. A full disk: one line, no file.
    with atomic_path(args.output) as tmp, disk_full_as(args.output, "the consolidated weights", remove=tmp):
        torch.save(state, tmp)
    from data_pipeline.hf_tokenizer import tokenizer_file
    tok = tokenizer_file(args.checkpoint)
    # The file holds weights only; the tokenizer they were trained with stays in the step directory.
    log.info(f"wrote {args.output}: {len(state)} tensors, {args.dtype}"
             + (f"; its tokenizer is {tok}" if tok.is_file() else ""))
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
