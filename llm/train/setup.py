"""What every pretraining run builds before its first step, whatever the backend: output directory with the
resolved config, the train/valid datasets, and the FLOP accounting used for MFU."""
from __future__ import annotations

import os
from pathlib import Path

from llm.config import ConfigError, RunConfig
from llm.cost.flops import flops_per_token, hfu
from typed_yaml import log, runlock


def _run_dirs(cfg: RunConfig) -> list[tuple[str, Path]]:
    """(key, directory) of what a run writes: out_dir, and checkpoint.dir when it lies outside out_dir."""
    out, ckpt = Path(cfg.out_dir).absolute(), Path(cfg.checkpoint.dir).absolute()
    return [("out_dir", out)] + ([] if ckpt == out or out in ckpt.parents else [("checkpoint.dir", ckpt)])


def lock_run(cfg: RunConfig) -> None:
    """Take the run's one-writer locks (typed_yaml/runlock.py) on out_dir, and on checkpoint.dir when it lies outside
    out_dir, for the rest of this process (or until release_run). Only the main rank takes them: the other ranks of a
    launched job write under the main rank's lock. Raises LockHeld (a ConfigError) naming the process that writes
    the run already (a second launch, a sweep's orphaned trainer); says so when it takes over a lock whose holder
    died (a kill -9, a crashed node)."""
    check_output_paths(cfg)
    for key, path in _run_dirs(cfg):
        runlock.lock_dir(path, f"{key}={path}", log=log.info)


def lock_error(cfg: RunConfig) -> str | None:
    """lock_run's verdict as a message (None: locked), for a launched job's rank 0 to hand to every rank
    (parallel/start.py), so that no rank goes on to a collective that rank 0 never reaches."""
    try:
        lock_run(cfg)
    except ConfigError as e:
        return str(e)
    return None


def release_run(cfg: RunConfig) -> None:
    """Release lock_run's locks (a finished run leaves no lock file behind; a killed one leaves a record that the next
    taker reports)."""
    for _, path in _run_dirs(cfg):
        runlock.release(path / runlock.LOCK_FILE)


def prepare_out_dir(cfg: RunConfig, is_main: bool) -> Path:
    """Lock out_dir for this run and create it with the resolved config (main rank), and print the config's warnings
    (RunConfig.warnings) once, on the main rank, before anything slow. LockHeld when another process writes it.
    is_main: whether this process locks and writes out_dir (the other ranks of a launched job write under its lock)."""
    out = Path(cfg.out_dir)
    if is_main:
        lock_run(cfg)
        for warning in cfg.warnings():
            log.info(warning)
        out.mkdir(parents=True, exist_ok=True)
        # The resolved config (defaults filled, overrides applied) is what reproduces the run.
        (out / "config.yaml").write_text(cfg.to_yaml())
    return out


def check_output_paths(cfg: RunConfig) -> None:
    """Refuse an out_dir or checkpoint.dir that cannot be a directory, before any step (not at the first save)."""
    for key, value in (("out_dir", cfg.out_dir), ("checkpoint.dir", cfg.checkpoint.dir)):
        path = Path(value)
        existing = next(q for q in (path, *path.parents) if q.exists())
        if not existing.is_dir():
            raise ConfigError(f"{key}={value} cannot be a directory: {existing} is a file")
        if not os.access(existing, os.W_OK):
            raise ConfigError(f"{key}={value} cannot be written: {existing} is not writable")


SCANNED_TOKENS = 1 << 24
"""Tokens of each dataset read to check their ids against model.vocab_size when no tokenizer is named (the
whole of a small dataset; a prefix of a large one, which costs well under a second)."""


def check_token_ids(cfg: RunConfig) -> None:
    """Without data.tokenizer, refuse data whose token ids do not fit model.vocab_size (an embedding lookup
    would fail at some step, or on GPU read out of bounds)."""
    from data_pipeline.indexed import IndexedDataset
    for p in cfg.data.paths:
        if not Path(p + ".bin").is_file():
            continue  # build_datasets names the missing file
        ds = IndexedDataset(p)
        n = min(ds.num_tokens(), SCANNED_TOKENS)
        top = int(ds.get_tokens(0, n).max()) if n else -1
        if top >= cfg.model.vocab_size:
            raise ConfigError(f"data.paths: {p} holds token id {top} but model.vocab_size={cfg.model.vocab_size}: "
                              f"set model.vocab_size > {top}, or name the data's tokenizer in data.tokenizer")


def check_tokenizer(cfg: RunConfig) -> None:
    """Refuse a tokenizer whose ids do not fit the embedding table, before any step runs."""
    if cfg.data.tokenizer is None:
        return check_token_ids(cfg)
    from data_pipeline.hf_tokenizer import load_tokenizer
    path = Path(cfg.data.tokenizer)
    if not path.is_file():
        raise ConfigError(f"data.tokenizer={cfg.data.tokenizer} does not exist")
    try:
        vocab = load_tokenizer(path).vocab_size
    except ValueError as e:  # not a SentencePiece model nor a Hugging Face tokenizer: name the key, not the C++ frame
        raise ConfigError(f"data.tokenizer={cfg.data.tokenizer} cannot be loaded: "
                          f"{str(e).split(': INTERNAL')[0].split(chr(10))[0]}") from None
    if vocab > cfg.model.vocab_size:
        raise ConfigError(f"data.tokenizer has {vocab} tokens but model.vocab_size={cfg.model.vocab_size}: "
                          f"set model.vocab_size >= {vocab}")


def build_datasets(cfg: RunConfig):
    """(train, valid) datasets of seq_len+1-token samples; ConfigError when a path is missing or too small."""
    from data_pipeline.gpt_dataset import build_dataset
    for p in cfg.data.paths:
        if not (Path(p + ".bin").is_file() and Path(p + ".idx").is_file()):
            raise ConfigError(f"data.paths: {p}.bin/.idx not found; prepare it with "
                              f"`python launch/prepare_data.py --input RAW.jsonl --output DIR` and use DIR/data")
    try:
        common = dict(paths=cfg.data.paths, weights=cfg.data.weights, seq_len=cfg.model.seq_len,
                      valid_fraction=cfg.data.valid_fraction, seed=cfg.train.seed)
        return build_dataset(split="train", **common), build_dataset(split="valid", **common)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None


def model_flops_per_token(cfg: RunConfig) -> float:
    """Model FLOPs per trained token (PaLM App. B: 6N + 12·L·H·Q·T; no recomputation, so this is MFU's)."""
    return flops_per_token(cfg.model, method="palm")


def recomputed_layers(cfg: RunConfig) -> int:
    """Blocks whose forward activation checkpointing runs twice (blocks 0, k, 2k, ... of ParallelConfig)."""
    k = cfg.parallel.recompute_interval
    return len(range(0, cfg.model.n_layers, k)) if k else 0


def hardware_flops_per_token(cfg: RunConfig) -> float:
    """FLOPs the hardware really executes per token: MFU's plus the forward passes activation checkpointing
    recomputes (HFU, PaLM App. B). hfu() at 1 token/s against a peak of 1 FLOP/s is exactly that count."""
    return hfu(1.0, cfg.model, 1.0, recomputed_layers=recomputed_layers(cfg))
