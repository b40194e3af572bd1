"""llm/files.py's writer: atomic_write_text leaves the old file or the new one, never a part, and no litter."""
from __future__ import annotations

import pytest

from llm.files import atomic_write_text

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "done.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["done.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    atomic_write_text(path, "old\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("llm.files.os.replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["sweep.json"]
