"""SIGTERM (what SLURM and `kill` send) stops the alignment chain the way it stops pretraining: the running stage
saves its in-stage checkpoint at the step it completed (llm/align/resume.py), the chain prints one line naming it
and exits 75, and the same command resumes from it. Also: every stage step reports progress (step k/total, ETA)
to the console and <out_dir>/logs/progress.log."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llm.align import handoff
from tests.align.helpers import RECIPE, make_base
from tests.conftest import ROOT

STEPS = 40  # ~10 steps/s: the signal comes a few steps in


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("sigterm_base"))


def _rows(out) -> list[dict]:
    path = out / "logs" / "sft.metrics.jsonl"
    return [json.loads(r) for r in path.read_text().splitlines()] if path.is_file() else []


def test_sigterm_mid_stage_saves_exits_75_and_the_rerun_resumes(base_dir, tmp_path):
    for name in ("data", "base"):
        (tmp_path / name).symlink_to(base_dir / name)
    cmd = [sys.executable, "launch/chain.py", "--config", str(RECIPE), f"out_dir={tmp_path}", "base.steps=20",
           "stages=[base,sft]", f"sft.steps={STEPS}", "sft.eval_every=0", "sft.checkpoint_every=0"]
    # A progress line per step, so that the log shows the stage's steps at once.
    env = dict(os.environ, PYTHONPATH=str(ROOT), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               LLM_PROGRESS_EVERY_S="0")
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        deadline = time.time() + 180
        while len(_rows(tmp_path)) < 3:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr").read_text()[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 75, (tmp_path / "stderr").read_text()[-3000:]
    killed = _rows(tmp_path)
    step = len(killed)
    assert 3 <= step < STEPS and not handoff.is_complete(tmp_path / "sft")
    saved = tmp_path / "resume" / "sft" / f"step_{step:08d}"  # the step it was on, though checkpoint_every=0
    assert (saved / "trainer_state.json").is_file()
    stderr = (tmp_path / "stderr").read_text().splitlines()
    assert stderr[-1] == (f"preempted: SIGTERM received: stage sft saved {saved} at step {step}; run the same "
                          "command again to resume from it")
    progress = (tmp_path / "logs" / "progress.log").read_text()
    assert f"sft: step 1/{STEPS} (2%) | loss " in progress and "ETA" in progress

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"sft: resumed from {saved} (step {step})" in rerun.stdout
    assert f"sft: step {STEPS}/{STEPS} (100%)" in rerun.stdout
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)) and rows[:step] == killed
    assert handoff.is_complete(tmp_path / "sft") and not (tmp_path / "resume" / "sft").exists()
