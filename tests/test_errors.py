"""The error contract (typed_yaml/errors.py) and the one way every command ends (launch/cli.py).

A user error is one line with its exit code, printed once per node; anything else keeps its traceback; the exit-code
table of docs/architecture.md is the code's; every entry point ends through the wrapper and catches no bare
ValueError around library code; `llm-forge COMMAND --help` works for every command.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch import cli
from typed_yaml.disk import DiskFull
from typed_yaml.errors import (EXIT_CODES, ConfigError, HandoffError, Preempted, TrainingDiverged, UserError,
                               one_line)
from data_pipeline.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(p for p in (ROOT / "launch").glob("*.py") if p.name not in ("__init__.py", "cli.py",
                                                                                   "align_common.py"))


def test_exit_code_table_in_docs_is_the_codes():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M))
    assert {int(k): v for k, v in rows.items()} == EXIT_CODES


@pytest.mark.parametrize("exc,code,label", [
    (ConfigError("train.lr: must be positive"), 2, "config error"),
    (DataError("in.jsonl:3: not JSON"), 2, "error"),
    (DiskFull("runs/x: no space left on device"), 2, "error"),
    (TrainingDiverged("loss became nan at step 7"), 3, "training diverged"),
    (HandoffError("tokenizer differs"), 4, "hand-off error"),
    (Preempted("SIGTERM: saved step_00000010"), 75, "preempted"),
    (UserError("lm_eval is not installed"), 2, "error"),
])
def test_user_error_is_one_line_with_its_code(exc, code, label, capsys, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    def main(argv):
        raise exc
    assert cli.call(main, []) == code
    err = capsys.readouterr().err
    assert err == f"{label}: {exc}\n"


def test_multi_line_message_is_printed_on_one_line(capsys):
    def main(argv):
        raise ConfigError("configs/x.yaml: while parsing a block mapping\n  in line 3\n    ^\nexpected <block end>")
    assert cli.call(main, []) == 2
    assert capsys.readouterr().err == ("config error: configs/x.yaml: while parsing a block mapping in line 3 "
                                       "expected <block end>\n")
    assert one_line("a\n\n  b  \n^\n") == "a b"


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise ValueError("shape mismatch: a bug, not the user's mistake")
    with pytest.raises(ValueError, match="shape mismatch"):
        cli.call(main, [])


def test_other_ranks_stay_quiet_unless_named(capsys, monkeypatch):
    def raises(exc):
        def main(argv):
            raise exc
        return main
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli.call(raises(ConfigError("bad key")), []) == 2
    assert capsys.readouterr().err == ""
    assert cli.call(raises(DiskFull("disk full on rank 1", announce=True)), []) == 2
    assert capsys.readouterr().err == "error: disk full on rank 1\n"
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert cli.call(raises(DiskFull("rank 1 announced it", announce=False)), []) == 2
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_130_without_traceback(capsys):
    def main(argv):
        raise KeyboardInterrupt
    assert cli.call(main, []) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_user_errors_stay_value_errors():
    """Library callers that validate input with `except ValueError` keep working."""
    for cls in (ConfigError, DataError, HandoffError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)


def _main_block(tree: ast.Module) -> ast.If | None:
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return node
    return None


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: p.name)
def test_entry_point_ends_through_the_wrapper(path):
    block = _main_block(ast.parse(path.read_text()))
    assert block is not None, f"{path.name}: no `if __name__ == '__main__'` block"
    code = ast.unparse(block)
    assert "launch.cli" in code and re.search(r"\brun\w*\(main\)", code), f"{path.name}: {code}"


def _caught(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"BaseException"}
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {ast.unparse(n) for n in names}


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: p.name)
def test_entry_point_catches_no_broad_error_around_library_code(path):
    """A bare ValueError or Exception caught around our code would print a bug as a user error: allowed only around
    a builtin's conversion of text (an argparse type function). OSError/RuntimeError only to re-raise them as a
    UserError naming the file (a full disk, a write that failed), never to swallow them."""
    offenders = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Try):
            continue
        calls = {ast.unparse(c.func) for stmt in node.body for c in ast.walk(stmt) if isinstance(c, ast.Call)}
        for handler in node.handlers:
            caught = _caught(handler)
            reraises = any(isinstance(n, ast.Raise) for stmt in handler.body for n in ast.walk(stmt))
            if (caught & {"ValueError", "Exception", "BaseException"}
                    and not calls <= {"int", "float", "tuple", "text.split", "t.strip"}):
                offenders.append(f"line {handler.lineno}: except {', '.join(sorted(caught))} around {sorted(calls)}")
            elif caught & {"OSError", "RuntimeError"} and not reraises:
                offenders.append(f"line {handler.lineno}: except {', '.join(sorted(caught))} swallowed")
    assert offenders == [], f"{path.name}: {offenders}"


@pytest.mark.parametrize("name", sorted(set(cli.COMMANDS) - {"test"}))  # `test` runs the suite itself
def test_llm_forge_help_of_every_command(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert f"usage: llm-forge {name}" in capsys.readouterr().out


def test_llm_forge_unknown_command_names_the_closest():
    with pytest.raises(UserError, match="unknown command 'pretrian'; did you mean 'pretrain'"):
        cli.main(["pretrian"])


def test_llm_forge_runs_the_same_entry_point_as_the_file():
    """The console script setup.py installs and `python launch/plan.py` give the same plan."""
    args = ["--flops", "1e19", "--json"]
    via_file = subprocess.run([sys.executable, "launch/plan.py", *args], cwd=ROOT, capture_output=True, text=True)
    via_cli = subprocess.run([sys.executable, "-c", "from launch.cli import console_main; console_main()", "plan",
                              *args], cwd=ROOT, capture_output=True, text=True)
    assert via_file.returncode == via_cli.returncode == 0, via_cli.stderr
    assert via_file.stdout == via_cli.stdout and via_file.stdout.startswith("{")
    bad = subprocess.run([sys.executable, "-c", "from launch.cli import console_main; console_main()", "plan",
                          "--flops", "1e60"], cwd=ROOT, capture_output=True, text=True)
    assert (bad.returncode == 2 and bad.stderr.startswith("config error: budget C=1e+60")
            and "Traceback" not in bad.stderr)
