"""Shared fixtures: a tiny prepared dataset from the bundled corpus and a tiny run config."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Every test that starts DeepSpeed must get the CPU accelerator, also when run outside .ci/run.
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: in-process only (no subprocess, no launcher, no ranks): "
                                       "`pytest -m unit`, a tier of about a minute beside the full suite")


# Test files that must run on one worker, one after the other: both start a local SLURM cluster.
SAME_WORKER = {"tests/launch/test_slurm.py": "slurm", "tests/launch/test_sweep.py": "slurm"}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """With `-n N --dist loadfile` (the README's test command): whole test files go to one worker, so a module's
    fixtures (a trained run, a sweep, a local SLURM cluster) are built once, and the files of SAME_WORKER share
    one. (Not xdist_group marks: pytest 9.2 ignores the node-id suffix through which xdist applies them.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileOrGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)
    return FileOrGroup(config, log)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """The bundled corpus tokenized with a 512-piece tokenizer: {'tokenizer', 'prefix', 'documents', 'tokens'}."""
    from tests.parallel.launcher_utils import prepare_tiny_data
    return prepare_tiny_data(tmp_path_factory.mktemp("tiny_data"))


def tiny_config_dict(data: dict, out_dir: Path, **sections) -> dict:
    """The launcher tests' config made smaller still (2 layers, 6 steps, eval every 3): a step in tens of ms."""
    from tests.parallel.launcher_utils import launcher_config_dict
    cfg = launcher_config_dict(data, out_dir, model={"n_layers": 2},
                               train={"max_steps": 6, "eval_every": 3}, checkpoint={"every": 0})
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
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
