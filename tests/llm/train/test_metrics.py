"""llm/train/metrics.py: an MFU above 100% (a peak measured too low) is shown as n/a, never as a percentage."""
import io
import json

from llm.train.metrics import MetricsLogger, valid_utilisation


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
