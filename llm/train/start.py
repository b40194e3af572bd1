"""The one start-up sequence of a pretraining run, whatever the backend (debug mode, or a launched job).

Order: the config checks that need files (tokenizer, datasets) before anything slow → the output directory
with the resolved config → the seed → the backend (model, optimizer; on a launched job the collective
engine start-up) → the peak FLOP/s → the loop. The seed is set immediately before the backend builds its
model, so every backend starts from the same RNG state; the peak comes after the backend because a launched
job measures it collectively (parallel/peak.py).
"""
from __future__ import annotations

from typing import Callable

import torch

from llm.config import RunConfig
from llm.train.backend import Backend, Throughput
from llm.train.loop import TrainOutcome, train
from llm.train.setup import (build_datasets, check_output_paths, check_tokenizer, hardware_flops_per_token,
                             model_flops_per_token, prepare_out_dir, release_run)


def run(cfg: RunConfig, make_backend: Callable[[], Backend], measure_peak: Callable[[], tuple[float, str]],
        announce: Callable[[Backend, float, str], None], *, is_main: bool = True, n_devices: int = 1,
        eval_only: bool = False, memory=None) -> TrainOutcome:
    """Start a run and train (or evaluate) it to the end; see llm/train/loop.py `train`.

    make_backend(): builds the backend (called once, after seeding). measure_peak(): (peak FLOP/s of one
    device, where the number came from). announce(backend, peak, source): the run's start-up log line (and
    whatever else the main rank records). is_main: whether this process writes the output directory.
    n_devices: the count the peak is multiplied by for MFU. memory: the MemoryWatch metrics rows report (see
    llm/train/loop.py `train`). Raises ConfigError on a config or data mistake,
    before the backend is built.
    """
    check_output_paths(cfg)
    check_tokenizer(cfg)
    train_set, valid_set = build_datasets(cfg)
    prepare_out_dir(cfg, is_main=is_main)
    torch.manual_seed(cfg.train.seed)
    backend = make_backend()
    peak, source = measure_peak()
    announce(backend, peak, source)
    throughput = Throughput(model_flops_per_token(cfg), hardware_flops_per_token(cfg), peak, n_devices)
    try:
        return train(cfg, backend, train_set, valid_set, throughput, eval_only=eval_only, memory=memory)
    finally:
        release_run(cfg)  # the run's one-writer lock, taken by prepare_out_dir (llm/train/setup.py)
