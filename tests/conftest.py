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

# Worker-seconds of the heavy files (and of the SLURM group), from the suite's --durations output on 2 cores;
# only their order matters. The scheduler hands out the heaviest remaining first (longest-processing-time
# first), so the long files of real launches start early and the many short files fill in at the end. In
# collection order the heaviest (tests/parallel/*) came last, and a file still running there, alone on one
# worker, made the tail of the run. A file not listed here costs 0: it runs after these, in collection
# order. test_equivalence.py's offload case JIT-builds DeepSpeed's CPU Adam op on a fresh machine (1.5-4
# minutes of compiling), counted in.
FILE_SECONDS = {
    "tests/parallel/test_equivalence.py": 370, "tests/parallel/test_moe.py": 250, "slurm": 245,
    "tests/parallel/test_context.py": 230,
    "tests/align/test_launcher.py": 195,
    "tests/parallel/test_pipeline.py": 180, "tests/align/test_chain.py": 135,
    "tests/parallel/test_layout_memory.py": 100, "tests/parallel/test_checkpoint.py": 80,
    "tests/parallel/test_zero_memory.py": 60, "tests/launch/test_plan.py": 57, "tests/parallel/test_universal.py": 56,
    "tests/data_pipeline/test_filter_speed.py": 49, "tests/parallel/test_safe_checkpoint.py": 43,
    "tests/align/test_resume.py": 43, "tests/llm/train/test_hardening.py": 42, "tests/llm/train/test_compile.py": 37,
    "tests/llm/train/test_safe_load.py": 37, "tests/data_pipeline/test_user_errors.py": 31,
    "tests/llm/hf/test_export.py": 28, "tests/parallel/test_memory_report.py": 22,
    "tests/llm/audit/test_audit_end_to_end.py": 20, "tests/llm/hf/test_import.py": 20,
    "tests/llm/hf/test_tokenizer.py": 15, "tests/align/test_sigterm.py": 14, "tests/align/test_compile.py": 13,
    "tests/llm/scaling/test_grid.py": 12, "tests/data_pipeline/test_resume.py": 10, "tests/launch/test_plot.py": 10,
}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """With `-n N --dist loadfile` (the README's test command): whole test files go to one worker, so a module's
    fixtures (a trained run, a sweep, a local SLURM cluster) are built once, and the files of SAME_WORKER share
    one; the heaviest files (FILE_SECONDS) are handed out first. (Not xdist_group marks: pytest 9.2 ignores the
    node-id suffix through which xdist applies them.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileOrGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)

        def _assign_work_unit(self, node) -> None:
            # The heaviest file left goes next (ties, i.e. unlisted files: collection order).
            scope = max(self.workqueue, key=lambda s: FILE_SECONDS.get(s, 0))
            self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)
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
