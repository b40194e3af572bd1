"""typed_yaml/files.py: the atomic writers leave the old file or the new one, never a part, and no litter; read_jsonl
names file:line strictly and skips what a running writer tore, leniently."""
from __future__ import annotations

import json

import numpy as np
import pytest

from typed_yaml import ConfigError
from typed_yaml.files import atomic_path, atomic_write_bytes, atomic_write_text, read_json, read_jsonl

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "done.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["done.json"]
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and [p.name for p in tmp_path.iterdir()] == ["done.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    atomic_write_text(path, "old\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("typed_yaml.files.os.replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


def test_atomic_path_serves_a_writer_of_its_own_and_cleans_up_after_it(tmp_path):
    path = tmp_path / "a.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        assert tmp.parent == tmp_path and tmp != path
        np.save(f, np.arange(3))
    assert np.load(path).tolist() == [0, 1, 2]
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert np.load(path).tolist() == [0, 1, 2] and [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "c.json"
    for text, message in [("", "empty"), ('{"a": 1, "a": 2}', "key 'a' appears twice"),
                          ("[1]", "the top level must be an object"), ('{"a": ', "not valid JSON \\(line 1")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"c\.json: {message}"):
            read_json(path)
    with pytest.raises(ConfigError, match="no such sweep file"):
        read_json(tmp_path / "nowhere.json", what="sweep file")


def test_read_jsonl_strict_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert list(read_jsonl(path)) == [{"step": 1}, {"step": 2}]  # blank lines are skipped
    path.write_text('{"step": 1}\n{"step": \n')
    with pytest.raises(ConfigError, match=r"m\.jsonl:2: not JSON"):
        list(read_jsonl(path))
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"m\.jsonl:2: a row is a JSON object, not list"):
        list(read_jsonl(path))
    assert list(read_jsonl(path, kind=object)) == [{"step": 1}, [1, 2]]
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(ConfigError, match=r"m\.jsonl: not a JSONL file \(not UTF-8 text at byte 16\)"):
        list(read_jsonl(path))
    with pytest.raises(ConfigError, match=r"nowhere\.jsonl: cannot be read"):
        list(read_jsonl(tmp_path / "nowhere.jsonl"))


def test_read_jsonl_lenient_skips_a_torn_line_and_a_missing_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')  # a writer killed mid-line
    assert list(read_jsonl(path, strict=False)) == [{"step": 1}]
    assert list(read_jsonl(tmp_path / "nowhere.jsonl", strict=False)) == []
    # Only b"\n" ends a line: a U+2028 inside a string (json.dumps(ensure_ascii=False) writes it raw) does not.
    path.write_text(json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\n")
    assert list(read_jsonl(path)) == [{"text": "a\u2028b"}]
