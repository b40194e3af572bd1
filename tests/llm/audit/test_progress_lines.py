"""The audit's progress (launch/audit.py's bars) also goes, as lines with done/total and an ETA, to stderr when it
is not a terminal and to the --out file's <name>.progress.log."""
from llm.audit.run import progress_factory
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_audit_progress_goes_to_stderr_and_the_log(tmp_path, capsys):
    bar = progress_factory(tmp_path / "audit.progress.log")("canaries", 6)
    for _ in range(3):
        bar.update(2)
    bar.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("audit canaries: seq 2/6 (33%) |") and err[-1].startswith("audit canaries: seq 6/6 (100%)")
    assert "ETA 0:00:00" in err[-1]
    logged = (tmp_path / "audit.progress.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in logged] == err
