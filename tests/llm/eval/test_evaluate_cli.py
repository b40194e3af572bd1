"""launch/evaluate.py: one-line errors with exit 2 on user mistakes, and the JSON + table it writes."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from launch import cli
from launch.evaluate import main
from tests.conftest import ROOT


def _err(capsys, argv) -> str:
    assert cli.call(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_user_mistakes_are_one_line_exit_2(eval_checkpoint, tmp_path, capsys):
    ck = ["--checkpoint", str(eval_checkpoint)]
    err = _err(capsys, ck + ["--tasks", "hellaswag_local"])
    assert "unknown task hellaswag_local" in err and "python_docs_ppl" in err and "python_docs_next_line" in err
    assert "not a checkpoint directory" in _err(capsys, ["--checkpoint", str(tmp_path), "--tasks", "python_docs_ppl"])
    bad = tmp_path / "no_tok"
    bad.mkdir()
    (bad / "model.pt").write_bytes((eval_checkpoint / "model.pt").read_bytes())
    cfg = yaml.safe_load((eval_checkpoint / "config.yaml").read_text())
    cfg["data"]["tokenizer"] = str(tmp_path / "gone.model")
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert "gone.model does not exist" in _err(capsys, ["--checkpoint", str(bad), "--tasks", "python_docs_ppl"])
    assert "is a directory" in _err(capsys, ck + ["--tasks", "python_docs_ppl", "--out", str(tmp_path)])
    assert "does not exist" in _err(capsys, ck + ["--tasks", "python_docs_ppl", "--out",
                                                  str(tmp_path / "a" / "r.json")])


def test_missing_lm_eval_names_the_extra(eval_checkpoint):
    code = ("import sys; sys.modules['lm_eval'] = None; from launch.evaluate import main; from launch import cli; "
            f"sys.exit(cli.call(main, ['--checkpoint', {str(eval_checkpoint)!r}, '--tasks', 'python_docs_ppl']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "pip install -e '.[eval]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_writes_json_and_table(eval_checkpoint, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert cli.call(main, ["--checkpoint", str(eval_checkpoint), "--tasks", "python_docs_next_line", "--limit", "8",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert 0 <= res["results"]["python_docs_next_line"]["acc,none"] <= 1
    table = (tmp_path / "results.md").read_text()
    assert "python_docs_next_line" in table and "acc_norm" in table
    assert "python_docs_next_line" in capsys.readouterr().out
