"""`llm-forge align STAGE` (launch/cli.py ALIGN_STAGES): every stage's file exists and is named for the stage, and
the stage's old name still runs it, with one warning line naming the new one."""
import importlib

import pytest

from launch import cli
from llm.align.config import RENAMED_STAGES, STAGES
from tests.conftest import ROOT

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_every_trained_stage_has_its_own_launch_file():
    assert set(cli.ALIGN_STAGES) == set(STAGES) - {"base"}
    for stage, module in cli.ALIGN_STAGES.items():
        assert module == f"launch.{stage}" and (ROOT / "launch" / f"{stage}.py").is_file(), stage
        assert f"main_for({stage!r}" in (ROOT / "launch" / f"{stage}.py").read_text().replace('"', "'")


@pytest.mark.parametrize("old", sorted(RENAMED_STAGES))
def test_an_old_stage_name_runs_the_new_stage_with_one_warning(old, capsys, monkeypatch):
    seen = []
    new_module = importlib.import_module(cli.ALIGN_STAGES[RENAMED_STAGES[old]])
    monkeypatch.setattr(new_module, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["align", old, "--config", "x.yaml"]) == 0
    assert seen == [["--config", "x.yaml"]]
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("warning: ") and f"'{old}' was renamed '{RENAMED_STAGES[old]}'" in line
    assert f"llm-forge align {RENAMED_STAGES[old]}" in line
