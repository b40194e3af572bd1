"""In-stage checkpoints (llm/align/resume.py): a stage stopped mid-way and run again resumes from its last
checkpoint, and its per-step log and final metrics equal an uninterrupted run's bit for bit (debug mode).

The stop is an exception raised from the console logger at a given step, after that step's row is written but
before its checkpoint, so the resumed run re-computes the steps after the previous checkpoint; a real SIGKILL of
launch/sft.py is the last case. Every stage runs a few steps on a 20-step base (as tests/align/test_launcher.py).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from llm.align import handoff
from llm.align.config import load_align_config
from tests.align.helpers import console_lines
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"
SMALL = ["sft.steps=40", "sft.eval_every=20", "sft.checkpoint_every=10", "rm.steps=30", "rm.policy_samples=1",
         "rm.checkpoint_every=10", "ppo.iterations=6", "ppo.rollout_batch=16", "ppo.mini_batch=8", "ppo.ppo_epochs=2",
         "ppo.kl_target=0.5", "ppo.kl_horizon=100", "ppo.ema=0.9", "ppo.checkpoint_every=2", "dpo.steps=30",
         "dpo.batch_size=8", "dpo.checkpoint_every=10", "grpo_rloo.iterations=6", "grpo_rloo.prompts_per_iteration=4",
         "grpo_rloo.mini_batch=8", "grpo_rloo.checkpoint_every=2"]


class Stopped(Exception):
    pass


def _stop_at(step: int):
    """The console lines of a run that is killed when it prints step `step`'s row."""
    def stop(line: str) -> None:
        if line.startswith(f"step {step} |"):
            raise Stopped(line)
    return console_lines(stop)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted chain base → sft → rm → ppo, dpo with SMALL settings."""
    from llm.align.chain import run_chain
    out = tmp_path_factory.mktemp("align_ref")
    torch.set_num_threads(1)
    cfg = load_align_config(RECIPE, [f"out_dir={out}", "base.steps=20", "stages=[base,sft,rm,ppo,dpo,grpo_rloo]",
                                     *SMALL])
    run_chain(cfg)
    return out


def _rows(out, stage):
    return [json.loads(r) for r in (out / "logs" / f"{stage}.metrics.jsonl").read_text().splitlines()]


def _metrics(out, stage):
    m = handoff.read_info(out / stage).metrics
    m.pop("wall_s")
    return m


def _resumed_equals_reference(reference, tmp_path, stage, run, links, stop_step, resumed_from):
    for name in links:
        (tmp_path / name).symlink_to(reference / name)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", "base.steps=20", *SMALL])
    with pytest.raises(Stopped), _stop_at(stop_step):
        run(cfg)
    assert not handoff.is_complete(tmp_path / stage)
    ckpts = list((tmp_path / "resume" / stage).iterdir())
    assert [p.name for p in ckpts] == [f"step_{resumed_from:08d}"]
    with console_lines() as lines:
        run(cfg)
    assert any(f"resumed from {ckpts[0]} (step {resumed_from})" in line for line in lines), lines
    assert _rows(tmp_path, stage) == _rows(reference, stage)
    assert _metrics(tmp_path, stage) == _metrics(reference, stage)
    assert not (tmp_path / "resume" / stage).exists()  # removed once the stage directory is complete


def test_sft_resumes_bitwise(reference, tmp_path):
    from llm.align.sft import run_sft
    _resumed_equals_reference(reference, tmp_path, "sft", run_sft, ("data", "base"), stop_step=30, resumed_from=20)


def test_rm_resumes_bitwise(reference, tmp_path):
    from llm.align.reward_training import run_rm
    _resumed_equals_reference(reference, tmp_path, "rm", run_rm, ("data", "base", "sft"), stop_step=30,
                              resumed_from=20)


def test_ppo_resumes_bitwise_with_its_controller_and_ema(reference, tmp_path):
    from llm.align.ppo import run_ppo
    _resumed_equals_reference(reference, tmp_path, "ppo", run_ppo, ("data", "base", "sft", "rm"), stop_step=5,
                              resumed_from=4)
    betas = [r["beta"] for r in _rows(reference, "ppo")]
    assert len(set(betas)) == len(betas)  # the adaptive β moved every iteration: its resumed value was checked


def test_dpo_resumes_bitwise(reference, tmp_path):
    from llm.align.dpo import run_dpo
    _resumed_equals_reference(reference, tmp_path, "dpo", run_dpo, ("data", "base", "sft"), stop_step=20,
                              resumed_from=10)


def test_grpo_resumes_bitwise(reference, tmp_path):
    from llm.align.grpo_rloo import run_grpo_rloo
    _resumed_equals_reference(reference, tmp_path, "grpo_rloo", run_grpo_rloo, ("data", "base", "sft"), stop_step=5,
                              resumed_from=4)


def test_checkpoint_of_another_config_is_not_resumed(reference, tmp_path):
    from llm.align.sft import run_sft
    for name in ("data", "base"):
        (tmp_path / name).symlink_to(reference / name)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", "base.steps=20", *SMALL])
    with pytest.raises(Stopped), _stop_at(30):
        run_sft(cfg)
    # A half-written checkpoint (killed mid-save) is never taken for a complete one.
    (tmp_path / "resume" / "sft" / ".tmp-step_00000030").mkdir()
    other = load_align_config(RECIPE, [f"out_dir={tmp_path}", "base.steps=20", *SMALL, "sft.optim.lr=1e-3"])
    with console_lines() as lines:
        run_sft(other)
    assert any("written under another config; starting at step 0" in line for line in lines), lines
    assert len(_rows(tmp_path, "sft")) == 40 and _rows(tmp_path, "sft") != _rows(reference, "sft")


def test_sft_killed_by_sigkill_resumes_bitwise(reference, tmp_path):
    for name in ("data", "base"):
        (tmp_path / name).symlink_to(reference / name)
    overrides = [f"out_dir={tmp_path}", "base.steps=20", *SMALL, "sft.steps=120", "sft.checkpoint_every=20"]
    cmd = [sys.executable, "launch/sft.py", "--config", str(RECIPE), *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 240
    while not list((tmp_path / "resume" / "sft").glob("step_*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not handoff.is_complete(tmp_path / "sft")
    killed_rows = len(_rows(tmp_path, "sft"))
    assert 20 <= killed_rows < 120
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    for name in ("data", "base"):
        (uninterrupted / name).symlink_to(reference / name)
    from llm.align.sft import run_sft
    run_sft(load_align_config(RECIPE, [*overrides, f"out_dir={uninterrupted}"]))
    assert _rows(tmp_path, "sft") == _rows(uninterrupted, "sft")
    assert _metrics(tmp_path, "sft") == _metrics(uninterrupted, "sft")
