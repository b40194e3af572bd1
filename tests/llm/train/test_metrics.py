"""llm/train/metrics.py: an MFU above 100% (a peak measured too low) is shown as n/a, never as a percentage; the
readers of metrics.jsonl, lenient for a file being written and strict for one a user names."""
import io
import json

import pytest

from llm.config import ConfigError
from llm.train.metrics import MetricsLogger, final_eval_loss, last_train_row, read_rows, valid_utilisation

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_mfu_above_one_reads_na_on_the_console_and_stays_in_the_file(tmp_path):
    stream = io.StringIO()
    log = MetricsLogger(tmp_path / "metrics.jsonl", stream=stream)
    log.log({"step": 1, "loss": 2.0, "mfu": 2.43}, console="step 1/2")
    log.log({"step": 2, "loss": 1.9, "mfu": 0.41}, console="step 2/2")
    log.close()
    first, second = stream.getvalue().splitlines()
    assert "mfu n/a" in first and "243" not in first
    assert "mfu 41.0%" in second
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["mfu"] for r in rows] == [2.43, 0.41]  # the file keeps what was computed (see the module docstring)


def test_valid_utilisation():
    assert [valid_utilisation(v) for v in (0.3, 1.0, 1.0001, None, "x", -0.1)] == [0.3, 1.0, None, None, None, None]


def test_the_readers_skip_a_torn_row_and_find_the_last_training_and_final_eval_rows(tmp_path):
    """A file a running trainer is appending to: a torn last line (or a non-object) is skipped, not an error."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 10, "loss": 5.0}, {"step": 10, "eval_loss": 5.1}, {"step": 20, "loss": 4.0},
            {"step": 20, "eval_loss": 4.2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n[1]\n" + '{"step": 30, "lo')
    assert read_rows(path) == rows
    assert last_train_row(path) == rows[2]
    assert final_eval_loss(path, 20) == 4.2 and final_eval_loss(path, 30) is None
    missing = tmp_path / "none.jsonl"
    assert read_rows(missing) == [] and last_train_row(missing) is None and final_eval_loss(missing, 20) is None


@pytest.mark.parametrize("content, message", [
    (b'{"step": 1}\n{"step": 2, "lo\n', "metrics.jsonl:2: not JSON"),
    (b'{"step": 1}\n[1]\n', "metrics.jsonl:2: a metrics row is a JSON object, not list"),
    (b'{"step": 1}\n\xff\n', "metrics.jsonl: not a metrics file \\(not UTF-8 text at byte 12\\)")])
def test_strict_reading_names_the_file_and_line(tmp_path, content, message):
    """launch/plot.py reads a finished file a user names: what is wrong with it is one ConfigError."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_rows(path, strict=True)
    assert read_rows(path) == [{"step": 1}]  # leniently, the good rows
