"""Helpers for tests that run launch/pretrain.py for real: single-process reference vs the DeepSpeed launcher.

A test writes one tiny config (`write_config`), runs it once in debug mode (`run_single`) and once per layout
(`run_deepspeed(..., world_size, overrides)`), then compares `train_losses` step by step (`max_rel_diff`).
Every run gets its own out_dir (an override), so runs never share metrics or checkpoints.

The launcher runs on CPU: DS_ACCELERATOR=cpu (gloo), one OpenMP thread per rank (the ranks share the
machine's cores; oversubscription only slows them down), a fresh master port per launch. A failed or
timed-out launch raises `LaunchError` carrying the command and the tail of its output.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = ROOT / "launch" / "pretrain.py"
CORPUS = ROOT / "data" / "raw" / "python_docs.jsonl"


class LaunchError(RuntimeError):
    """A launch exited non-zero or ran past its timeout."""


def prepare_tiny_data(out_dir: Path, vocab_size: int = 512) -> dict:
    """The bundled corpus tokenized into out_dir: {'tokenizer', 'prefix', 'documents', 'tokens'} (a few s)."""
    from tests.data_pipeline.tiny_data import tokenize_jsonl
    return tokenize_jsonl([CORPUS], out_dir, vocab_size=vocab_size)


def launcher_config_dict(data: dict, out_dir: Path, **sections) -> dict:
    """A config for layout-equivalence runs: 4 layers (so pp=2 gets 2 each, pp=4 one), d_model 64, heads that
    split over tp=2 (4 query, 2 kv heads), global batch 8 of micro-batches 2, 5 steps, fp32, no dropout.

    Evaluation and checkpointing happen only at the end (eval_every=0, checkpoint.every=0) to keep a launch
    short. `sections` update the sections by key, e.g. model={"tie_embeddings": True}.
    """
    cfg = {
        "model": {"n_layers": 4, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128,
                  "vocab_size": 512, "seq_len": 32},
        "data": {"paths": [data["prefix"]], "tokenizer": data["tokenizer"]},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"max_steps": 5, "global_batch_size": 8, "micro_batch_size": 2, "eval_every": 0,
                  "eval_batches": 1, "seed": 0},
        "precision": "fp32",
        "checkpoint": {"every": 0, "keep": 1},
        "out_dir": str(out_dir),
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def free_port() -> int:
    """An unused TCP port (bound and released; good enough for a test's master port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               # A rank that dies of a signal prints every thread's Python stack into the launch's output.
               PYTHONFAULTHANDLER="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID"):
        env.pop(key, None)  # a test run inside a launched job must not look launched itself
    env.update(extra or {})
    return env


@dataclass
class Launch:
    cmd: list[str]
    returncode: int
    output: str
    seconds: float
    out_dir: Path


def _run(cmd: list[str], out_dir: Path, env: dict | None, timeout: float) -> Launch:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(env), capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise LaunchError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}\n{out[-4000:]}") from None
    launch = Launch(cmd, proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0, out_dir)
    if proc.returncode != 0:
        raise LaunchError(f"exit {proc.returncode}: {' '.join(cmd)}\n{launch.output[-6000:]}")
    return launch


def run_single(config: Path, out_dir: Path, overrides: list[str] = (), env: dict | None = None,
               timeout: float = 300) -> Launch:
    """`python launch/pretrain.py --config config out_dir=... *overrides` (debug mode, one process)."""
    cmd = [sys.executable, str(PRETRAIN), "--config", str(Path(config).resolve()),
           f"out_dir={Path(out_dir).resolve()}", *overrides]
    return _run(cmd, Path(out_dir), env, timeout)


def run_deepspeed(config: Path, out_dir: Path, world_size: int, overrides: list[str] = (), env: dict | None = None,
                  timeout: float = 600, port: int | None = None) -> Launch:
    """`deepspeed --num_gpus world_size --master_port P launch/pretrain.py --config config out_dir=... *overrides`."""
    port = port or free_port()
    cmd = ["deepspeed", "--num_gpus", str(world_size), "--master_port", str(port), str(PRETRAIN),
           "--config", str(Path(config).resolve()), f"out_dir={Path(out_dir).resolve()}", *overrides]
    launch = _run(cmd, Path(out_dir), env, timeout)
    assert_no_shm_leak(port)
    return launch


def assert_no_shm_leak(port: int) -> None:
    """A launch must leave no DeepSpeed shared-memory buffers behind (parallel/ds_cpu.py: 69 MB per rank)."""
    leaked = list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leaked, f"DeepSpeed left {len(leaked)} shared-memory buffers: {leaked[:2]}"


def read_metrics(out_dir: Path) -> list[dict]:
    """Rows of out_dir/metrics.jsonl (train rows carry 'loss', eval rows 'eval_loss')."""
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_losses(out_dir: Path) -> dict[int, float]:
    """{step: training loss} of a finished run."""
    return {row["step"]: row["loss"] for row in read_metrics(out_dir) if "loss" in row}


def eval_losses(out_dir: Path) -> dict[int, float]:
    return {row["step"]: row["eval_loss"] for row in read_metrics(out_dir) if "eval_loss" in row}


def max_rel_diff(reference: dict[int, float], other: dict[int, float]) -> float:
    """Largest |other - reference| / |reference| over the steps; raises AssertionError if the steps differ."""
    assert sorted(reference) == sorted(other), f"steps differ: {sorted(reference)} vs {sorted(other)}"
    return max(abs(other[s] - reference[s]) / abs(reference[s]) for s in reference)


def loss_table(reference: dict[int, float], runs: dict[str, dict[int, float]]) -> str:
    """Human-readable per-step comparison for assertion messages and reports."""
    lines = ["step  reference   " + "  ".join(f"{name:>22}" for name in runs)]
    for s in sorted(reference):
        cells = [f"{r[s]:.7f} ({(r[s] - reference[s]) / reference[s]:+.1e})" for r in runs.values()]
        lines.append(f"{s:4d}  {reference[s]:.7f}   " + "  ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
