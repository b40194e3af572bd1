"""typed_yaml/log.py: which rank prints."""
import subprocess
import sys

import pytest

from typed_yaml import log

@pytest.fixture(autouse=True)
def _fresh_rank(monkeypatch):
    monkeypatch.setattr(log, "_rank", None)
    monkeypatch.delenv("RANK", raising=False)


@pytest.mark.unit
def test_a_plain_process_is_the_main_rank(capsys):
    log.info("hello")
    log.warning("careful")
    log.every_rank("here")
    assert capsys.readouterr().out == "hello\nwarning: careful\nrank 0: here\n"


@pytest.mark.unit
def test_other_ranks_print_only_their_own_lines(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    log.info("shared")
    log.warning("shared")
    log.every_rank("mine")
    assert capsys.readouterr().out == "rank 3: mine\n"


@pytest.mark.unit
def test_set_rank_wins_over_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    log.set_rank(1)
    log.info("shared")
    assert capsys.readouterr().out == ""
    assert not log.is_main() and log.rank() == 1


def test_lines_are_flushed_at_once():
    # A launcher reads a rank's pipe while it runs: a line must arrive before the process ends.
    code = ("from typed_yaml import log; import sys, time; log.info('first'); "
            "sys.stdin.readline(); log.info('second')")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "first\n"
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "second\n"
    finally:
        p.kill()
        p.wait()
