"""tests/conftest.py's scheduler table: every file it names exists (a renamed or removed heavy file would
silently fall back to collection order, which put the longest files last), and the SLURM group is priced."""
import pytest

from tests.conftest import FILE_SECONDS, ROOT, SAME_WORKER

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_every_costed_file_exists():
    groups = set(SAME_WORKER.values())
    missing = [k for k in FILE_SECONDS if k not in groups and not (ROOT / k).is_file()]
    assert not missing, f"tests/conftest.py FILE_SECONDS names files that do not exist: {missing}"
    assert not set(SAME_WORKER) & set(FILE_SECONDS), "a grouped file is priced through its group, not alone"
    assert groups <= set(FILE_SECONDS)
