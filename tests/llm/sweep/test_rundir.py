"""llm/sweep/rundir.py: a point's done.json is written only from a finished run, atomically, and read back checked."""
from __future__ import annotations

import json
import math

import pytest

from llm.sweep import RunFailed, UserError
from llm.sweep.rundir import collect_point, finished, marker, metrics_file, read_done, run_finished

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

POINT = {"name": "c3e10_n1", "seed": 0, "flops": 3e10, "n_params": 100_000, "n_tokens": 50_000,
         "tokens_trained": 51_200, "total_steps": 50}


def _log(out, *rows):
    path = metrics_file(out, POINT["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_finished_run_is_collected_into_done_json(tmp_path):
    _log(tmp_path, {"step": 25, "eval_loss": 5.0}, {"step": 50, "loss": 4.1}, {"step": 50, "eval_loss": 4.0})
    assert run_finished(tmp_path, POINT)
    done = collect_point(tmp_path, POINT, wall_s=12.5)
    assert done["loss"] == 4.0 and done["wall_s"] == 12.5 and done["seed"] == 0
    assert read_done(marker(tmp_path, POINT["name"])) == done
    assert finished(tmp_path, {"points": [POINT, {**POINT, "name": "not_run"}]}) == {POINT["name"]: done}
    assert sorted(p.name for p in marker(tmp_path, POINT["name"]).parent.iterdir()) == ["done.json", "run"]


@pytest.mark.parametrize("rows", [[], [{"step": 25, "eval_loss": 5.0}], [{"step": 50, "eval_loss": math.nan}]],
                         ids=["no metrics", "killed mid-run", "diverged"])
def test_no_done_json_without_a_final_eval_loss(tmp_path, rows):
    if rows:
        _log(tmp_path, *rows)
    with pytest.raises(RunFailed, match="no final eval loss at step 50 in .*metrics.jsonl .*train.log"):
        collect_point(tmp_path, POINT)
    assert not marker(tmp_path, POINT["name"]).exists()


@pytest.mark.parametrize("content, message", [
    ("", "empty"), ('{"loss": 2.0, "flo', "not valid JSON"), ("[1, 2]", "must be an object"),
    ('{"loss": NaN, "flops": 1e10, "n_params": 1e5, "n_tokens": 1e6}', "'loss' is nan"),
    ('{"loss": -1, "flops": 1e10, "n_params": 1e5, "n_tokens": 1e6}', "'loss' is -1"),
    ('{"loss": 2.0, "flops": "big", "n_params": 1e5, "n_tokens": 1e6}', "'flops' is 'big'"),
    (None, "is a directory")])
def test_a_damaged_done_json_is_named_not_fitted(tmp_path, content, message):
    """A point's done.json is read back by --fit-only and every rerun: damaged, it names itself and the way out."""
    m = tmp_path / "done.json"
    m.mkdir() if content is None else m.write_text(content)
    with pytest.raises(UserError, match=message) as e:
        read_done(m)
    assert str(m) in str(e.value) and "delete it" in str(e.value)
