"""The one way every command ends, and the `llm-forge` console command.

`run(main)` is what each `launch/*.py` calls under `if __name__ == "__main__"`: it runs `main(argv) -> int` and
exits with its code. A UserError (typed_yaml/errors.py) becomes one line, "<label>: <message>", printed once per
node (or by the rank a collective operation named) and its exit code; Ctrl-C is 130 without a traceback; anything
else is a bug and propagates with its traceback (exit 1). A rank that joined a process group exits through
parallel/rank_exit.py (os._exit after flushing), the other processes through sys.exit.

`llm-forge COMMAND ...` (installed by setup.py) runs the same entry points in this process:

    llm-forge plan --flops 1e19
    llm-forge prepare-data --input data/raw/python_docs.jsonl --output runs/data/python_docs
    llm-forge pretrain --config configs/debug.yaml                   # debug mode, one process
    llm-forge pretrain --gpus 2 --config configs/debug.yaml          # = deepspeed --num_gpus 2 launch/pretrain.py ...
    llm-forge align --config configs/align/default.yaml              # the chain; `align sft ...` one stage
    llm-forge sweep|eval|audit|export-hf|import-hf|consolidate|plot ...
    llm-forge test                                                   # the README's test command (a source checkout)

`--gpus N` (pretrain, align) hands the same arguments to the DeepSpeed launcher, which starts N ranks of the
launch/ file; `--master-port P` picks its rendezvous port (default 29500, DeepSpeed's).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, NoReturn

from typed_yaml.args import positive_int
from typed_yaml.errors import EXIT_INTERRUPTED, UserError, one_line

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "plan": ("launch.plan", "a compute-optimal run from a FLOP, GPU-hour or price budget"),
    "prepare-data": ("launch.prepare_data", "raw text → cleaned, deduplicated, tokenized training data"),
    "pretrain": ("launch.pretrain", "pretrain a model from a YAML config (--gpus N: N DeepSpeed ranks)"),
    "sweep": ("launch.sweep", "an isoFLOP sweep and the scaling law fitted to it"),
    "align": ("launch.chain", "the alignment chain of a recipe, or one stage: align {sft,rm,ppo,dpo,grpo_rloo} ..."),
    "eval": ("launch.evaluate", "lm-evaluation-harness tasks on any checkpoint"),
    "audit": ("launch.audit", "the canary and memorization audit of a trained model"),
    "export-hf": ("launch.export_hf", "a checkpoint → a Hugging Face model directory"),
    "import-hf": ("launch.import_hf", "a Hugging Face Llama model → a training checkpoint"),
    "consolidate": ("launch.consolidate", "a DeepSpeed checkpoint of any layout → single-process weights"),
    "plot": ("launch.plot", "loss, learning-rate and throughput curves of a run as PNGs"),
    "test": (None, "run the test suite (the README's test command; needs a source checkout)"),
}
ALIGN_STAGES = {"sft": "launch.sft", "rm": "launch.rm", "ppo": "launch.ppo", "dpo": "launch.dpo",
                "grpo_rloo": "launch.grpo_rloo"}
"""`llm-forge align STAGE`: the stage's name in a recipe → the file that runs it alone (launch/<stage>.py)."""
LAUNCHED = ("pretrain", "align")
"""Commands that take --gpus N: they run as ranks of a DeepSpeed job."""
TEST_COMMAND = ["-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "tests"]


def _announces(e: UserError) -> bool:
    """Whether this process prints `e`: every rank of a launched job reaches the same verdict, so the first rank of
    each node speaks, unless a collective operation named the rank that saw the failure first."""
    if e.announce is not None:
        return e.announce
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def call(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """`main(argv)`'s exit code, a UserError printed as one line and turned into its code, Ctrl-C into 130."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        if _announces(e):
            print(f"{e.label}: {one_line(e)}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Run entry point `main` and exit with its code (see the module docstring)."""
    from parallel.rank_exit import exit_rank  # imports nothing heavy
    exit_rank(call(main, argv))


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return ("usage: llm-forge COMMAND [ARGS ...]   (llm-forge COMMAND --help for its options)\n\ncommands:\n"
            + "\n".join(lines))


def _take(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of `flag` (as `--flag V` or `--flag=V`) and `args` without it."""
    for i, a in enumerate(args):
        if a == flag:
            if i + 1 >= len(args):
                raise UserError(f"{flag} needs a value")
            return args[i + 1], args[:i] + args[i + 2:]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1], args[:i] + args[i + 1:]
    return None, args


def _positive_int(flag: str, value: str) -> int:
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError as e:
        raise UserError(f"{flag} {value}: {e}") from None


def _deepspeed(module: str, gpus: int, port: str | None, args: list[str]) -> int:
    """Run `module`'s file as `gpus` ranks under the DeepSpeed launcher; its exit code."""
    launcher = shutil.which("deepspeed")
    if launcher is None:
        raise UserError("--gpus needs the `deepspeed` launcher on PATH (pip install deepspeed)")
    script = importlib.util.find_spec(module).origin  # the file, without running its imports here
    cmd = [launcher, "--num_gpus", str(gpus)] + (["--master_port", port] if port else []) + [script] + args
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        raise UserError(f"unknown command {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                        + f" (commands: {', '.join(COMMANDS)})")
    if name == "test":
        if not (ROOT / "tests").is_dir():
            raise UserError(f"llm-forge test runs the suite of a source checkout; {ROOT / 'tests'} does not exist")
        if "DS_ACCELERATOR" not in os.environ and not _has_cuda():
            os.environ["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator, as the README's command sets it
        return subprocess.call([sys.executable] + TEST_COMMAND + rest, cwd=ROOT)
    module = COMMANDS[name][0]
    if name == "align" and rest and rest[0] in _renamed_stages():
        from llm.align.config import RENAMED_STAGES
        from typed_yaml import log
        log.warning(f"stage {rest[0]!r} was renamed {RENAMED_STAGES[rest[0]]!r}; `llm-forge align {rest[0]}` still "
                    f"runs it, but write `llm-forge align {RENAMED_STAGES[rest[0]]}`")
        rest = [RENAMED_STAGES[rest[0]], *rest[1:]]
    if name == "align" and rest and rest[0] in ALIGN_STAGES:
        module, rest = ALIGN_STAGES[rest[0]], rest[1:]
    if name in LAUNCHED:
        gpus, rest = _take(rest, "--gpus")
        port, rest = _take(rest, "--master-port")
        if gpus is not None:
            return _deepspeed(module, _positive_int("--gpus", gpus), port, rest)
        if port is not None:
            raise UserError("--master-port goes with --gpus N (the DeepSpeed launcher's rendezvous port)")
    entry = importlib.import_module(module)
    sys.argv[0] = f"llm-forge {name}"  # argparse's prog, in usage lines and one-line errors
    return entry.main(rest)


def _renamed_stages() -> tuple[str, ...]:
    """Old alignment stage names (llm/align/config.py RENAMED_STAGES), still accepted by `llm-forge align`."""
    from llm.align.config import RENAMED_STAGES
    return tuple(RENAMED_STAGES)


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def console_main() -> NoReturn:
    """The `llm-forge` console script (setup.py's entry point)."""
    run(main)
