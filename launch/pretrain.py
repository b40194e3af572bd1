"""Pretrain a model from a YAML config.

    python launch/pretrain.py --config configs/debug.yaml [key.sub=value ...]        # single-process debug mode
    deepspeed --num_gpus N launch/pretrain.py --config configs/X.yaml [key=value ...] # DeepSpeed, any TP×PP×DP
    srun launch/pretrain.py --config ...                                               # one task per GPU under SLURM

How it was started is detected from the environment (see parallel/launch_env.py). A config mistake prints
one line and exits 2; a diverged run exits 3; a preempted run (SIGTERM/SIGUSR1) saves a checkpoint and exits
75 (EX_TEMPFAIL, sysexits.h: "try again"), and the same command resumes it (launch/slurm/ requeues on 75).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from llm.config import load_config
from typed_yaml import log
from typed_yaml.disk import DiskFull, disk_full_message
from typed_yaml.errors import EXIT_PREEMPTED


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML run config")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=20 precision=bf16")
    ap.add_argument("--detect-anomaly", action="store_true", help="torch.autograd anomaly detection (slow)")
    ap.add_argument("--eval-only", action="store_true",
                    help="load the latest checkpoint (or checkpoint.init_from), evaluate, write <out_dir>/eval.json")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Config errors (2) and a diverged run (3) leave as UserErrors, printed by launch/cli.py."""
    args = parse_args(argv)
    from llm.train.loop import PreemptionFlag
    PreemptionFlag.install(startup=True)  # before the slow start-up, so an early SIGUSR1 is not fatal
    from parallel.launch_env import detect_launch
    cfg = load_config(args.config, args.overrides)
    try:
        launch = detect_launch()
        if args.detect_anomaly:
            import torch
            torch.autograd.set_detect_anomaly(True)
        if launch.mode == "python":
            from llm.train.debug import run_debug
            outcome = run_debug(cfg, eval_only=args.eval_only)
        else:
            from parallel.start import run_distributed
            outcome = run_distributed(cfg, launch, eval_only=args.eval_only)
    except OSError as e:  # a full disk at a write site that does not name it (typed_yaml/disk.py); else a bug
        message = disk_full_message(e, Path(cfg.out_dir),
                                    f"the run's files (out_dir={cfg.out_dir}, checkpoint.dir={cfg.checkpoint.dir})")
        if message is None:
            raise
        raise DiskFull(message) from None
    if outcome.status == "preempted":
        return EXIT_PREEMPTED
    if outcome.status == "finished":
        fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731 (None when resumed at the last step)
        log.info(f"done: {outcome.step} steps, last loss {fmt(outcome.last_loss)}, "
                 f"eval loss {fmt(outcome.eval_loss)}, checkpoint {outcome.checkpoint}")
    return 0


if __name__ == "__main__":
    from launch.cli import run
    run(main)
