"""Shared fixtures: a tiny prepared dataset from the bundled corpus and a tiny run config."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "raw" / "python_docs.jsonl"

# Every test that starts DeepSpeed must get the CPU accelerator, also when run outside .ci/run.
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """The bundled corpus tokenized with a 512-piece tokenizer: {'tokenizer', 'prefix', 'documents', 'tokens'}."""
    from data_pipeline.minimal import prepare_minimal
    out = tmp_path_factory.mktemp("tiny_data")
    return prepare_minimal([str(CORPUS)], out, vocab_size=512)


def tiny_config_dict(data: dict, out_dir: Path, **sections) -> dict:
    """A run config small enough for a step in tens of milliseconds on one CPU core."""
    cfg = {
        "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128,
                  "vocab_size": 512, "seq_len": 32},
        "data": {"paths": [data["prefix"]], "tokenizer": data["tokenizer"]},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"max_steps": 6, "global_batch_size": 8, "micro_batch_size": 2, "eval_every": 3,
                  "eval_batches": 1},
        "checkpoint": {"every": 0},
        "out_dir": str(out_dir),
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


@pytest.fixture
def tiny_config(tiny_data, tmp_path):
    """Factory: tiny_config(**section_overrides) -> path of a YAML config in a fresh tmp dir."""
    def make(name: str = "run", **sections) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_config_dict(tiny_data, tmp_path / name, **sections)))
        return path
    return make
