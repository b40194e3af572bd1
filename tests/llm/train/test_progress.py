"""Progress lines (llm/train/progress.py): when they are written, what they say, where they go; and the first steps
of pretraining, which report before the first metrics line."""
import json
from pathlib import Path

import torch

from llm.config import load_config
from llm.train.debug import run_debug
from llm.train.progress import Progress
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_after_the_first_unit_every_interval_and_at_the_end(tmp_path):
    clock, printed = Clock(), []
    log = tmp_path / "logs" / "progress.log"
    p = Progress("sft", 10, "step", log=printed.append, log_file=log, every_s=30.0, clock=clock)
    lines = []
    for k in range(10):
        clock.now += 10.0  # 10 s per step
        lines.append(p.update(1, loss=1.0 / (k + 1)))
    written = [k + 1 for k, line in enumerate(lines) if line is not None]
    assert written == [1, 4, 7, 10]  # the first, then every 30 s, then the last
    assert printed[0] == "sft: step 1/10 (10%) | loss 1 | 10 s/step | elapsed 0:00:10 | ETA 0:01:30"
    assert printed[-1].startswith("sft: step 10/10 (100%) | loss 0.1 |") and printed[-1].endswith("ETA 0:00:00")
    file_lines = log.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in file_lines] == printed  # the same lines, time-stamped


def test_resumed_phase_counts_its_rate_from_the_resume_and_disabled_ranks_are_silent(tmp_path):
    clock, printed = Clock(), []
    p = Progress("ppo", 20, "iteration", done=10, log=printed.append, every_s=0.0, clock=clock)
    clock.now = 4.0
    p.update(1, reward=0.5, kl=0.01, response_length=7.0)
    clock.now = 8.0
    p.update(1, reward=0.6, kl=None)
    assert printed[0] == ("ppo: iteration 11/20 (55%) | reward 0.5 | kl 0.01 | response_length 7 | 4 s/iteration "
                          "| elapsed 0:00:04 | ETA 0:00:36")
    assert printed[1].startswith("ppo: iteration 12/20 (60%) | reward 0.6 | 4 s/iteration")  # None is left out
    quiet = Progress("ppo", 20, log=printed.append, log_file=tmp_path / "p.log", enabled=False, clock=clock)
    quiet.update(20)
    assert len(printed) == 2 and not (tmp_path / "p.log").exists()


def test_pretraining_reports_its_first_steps_before_the_first_metrics_line(tiny_config, capsys):
    cfg = load_config(tiny_config(), ["train.max_steps=6", "train.log_every=5", "train.eval_every=0"])
    run_debug(cfg, device=torch.device("cpu"))
    lines = capsys.readouterr().out.splitlines()
    early = [line for line in lines if line.startswith("pretrain: step")]
    # Step 1 at once (with its own time: warm-up), then nothing until step 5's metrics line (30 s not passed).
    assert len(early) == 1 and early[0].startswith("pretrain: step 1/6 (17%) | loss "), lines
    assert "ETA" in early[0] and "first step" in early[0] and "warm-up included" in early[0]
    rows = [json.loads(r) for r in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 5  # where the metrics lines take over (llm/train/metrics.py)
    logged = (Path(cfg.out_dir) / "progress.log").read_text().splitlines()
    assert len(logged) == 1 and logged[0].endswith(early[0])
