"""The alignment stages under the DeepSpeed launcher (2 CPU ranks, gloo) against debug mode, step by step.

Each case runs one stage twice from the same debug-mode checkpoints (a module-scoped fixture: base, SFT and
RM with few steps), once under plain `python` and once under `deepspeed --num_gpus 2`, and compares the
logged rows. Both layouts compute the same global-batch update: each rank normalises its share of a loss by
the global count / world and DeepSpeed averages gradients over the ranks, so only the order of fp32 sums
differs (a few ulps per step, compounded over a handful of AdamW steps; the pretraining equivalence tests see
< 1e-5 on the same model size).

Tolerance 1e-4 relative on every logged loss and statistic. PPO's policy loss is a mean of O(1) terms
(whitened advantages times ratios) that cancel to ~1e-2, so its rounding error is set by the terms, not the
mean: it gets an absolute floor of 1e-6 (measured differences ≤ 2e-7). PPO's sampling must give identical
tokens (each prompt has its own noise seed, llm/align/seeds.py `Stream.PPO_ROLLOUT`): response length and EOS rate
are compared exactly, and a single different token would move the reward by far more than the tolerance.
"""
import json
import math
import subprocess
import sys

import pytest
import torch

from tests.align.helpers import make_base
from tests.conftest import ROOT
from tests.parallel.launcher_utils import free_port, launch_env

RECIPE = ROOT / "configs" / "align" / "default.yaml"
REL_TOL = 1e-4
ABS_TOL = 1e-6


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("align_base"))


@pytest.fixture(scope="module")
def rm_dir(base_dir):
    """base_dir plus a debug-mode SFT (20 steps) and reward model (10 steps) next to the base checkpoint."""
    from llm.align.config import load_align_config
    from llm.align.reward_training import run_rm
    from llm.align.sft import run_sft
    cfg = load_align_config(RECIPE, [f"out_dir={base_dir}", "sft.steps=20", "sft.eval_every=0", "rm.steps=10",
                                     "rm.policy_samples=1"])
    torch.set_num_threads(1)
    run_sft(cfg)
    run_rm(cfg)
    return base_dir


def _run(cmd, timeout=600):
    proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _single_and_ds(script: str, stage: str, source, tmp_path, links, overrides) -> tuple[list[dict], list[dict]]:
    """Logged rows of `stage` run by launch/<script> in debug mode and under `deepspeed --num_gpus 2`, each in
    its own out_dir whose `links` point at the fixture's data and checkpoints."""
    runs = {}
    for name in ("single", "ds"):
        out = tmp_path / name
        out.mkdir()
        for d in links:
            (out / d).symlink_to(source / d)
        args = [f"launch/{script}", "--config", str(RECIPE), f"out_dir={out}", *overrides]
        if name == "single":
            _run([sys.executable, *args])
        else:
            _run(["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), *args])
        rows = (out / "logs" / f"{stage}.metrics.jsonl").read_text().splitlines()
        runs[name] = [json.loads(r) for r in rows]
    return runs["single"], runs["ds"]


def _assert_close(single: list[dict], ds: list[dict], keys, exact=()) -> None:
    assert len(single) == len(ds)
    for a, b in zip(single, ds):
        for k in exact:
            assert a[k] == b[k], (k, single, ds)
        for k in keys:
            assert math.isclose(a[k], b[k], rel_tol=REL_TOL, abs_tol=ABS_TOL), (k, a[k], b[k], single, ds)


@pytest.mark.parametrize("zero", [0, 2])
def test_sft_data_parallel_matches_debug_mode(base_dir, tmp_path, zero):
    single, ds = _single_and_ds("sft.py", "sft", base_dir, tmp_path, ("data", "base"),
                                ["sft.steps=5", "sft.batch_size=8", "sft.eval_every=0", "sft.optim.warmup_steps=2",
                                 f"sft.zero_stage={zero}"])
    assert len(single) == 5
    _assert_close(single, ds, ["loss"])


def test_ppo_data_parallel_matches_debug_mode(rm_dir, tmp_path):
    # The adaptive KL controller is on (kl_target) so β, fed the global KL, is compared too.
    single, ds = _single_and_ds("ppo.py", "ppo", rm_dir, tmp_path, ("data", "sft", "rm"),
                                ["ppo.iterations=3", "ppo.rollout_batch=16", "ppo.mini_batch=8", "ppo.ppo_epochs=2",
                                 "ppo.kl_target=0.5", "ppo.kl_horizon=100", "ppo.actor_zero_stage=1",
                                 "ppo.critic_zero_stage=2"])
    assert len(single) == 3
    _assert_close(single, ds, ["reward", "kl", "beta", "policy_loss", "value_loss", "clip_frac", "entropy"],
                  exact=["response_length", "eos_rate"])


@pytest.mark.parametrize("algorithm,reward", [("grpo", "llm.align.task:sort_reward"),
                                              ("rloo", "[rm,llm.align.task:sort_reward]")])
def test_grpo_rloo_data_parallel_matches_debug_mode(rm_dir, tmp_path, algorithm, reward):
    # GRPO rewarded by the checker function; RLOO by the RM (sharded forwards) plus the checker.
    single, ds = _single_and_ds("grpo_rloo.py", "grpo_rloo", rm_dir, tmp_path, ("data", "sft", "rm"),
                                [f"grpo_rloo.algorithm={algorithm}", f"grpo_rloo.reward={reward}",
                                 "grpo_rloo.iterations=3",
                                 "grpo_rloo.prompts_per_iteration=4", "grpo_rloo.group_size=4",
                                 "grpo_rloo.mini_batch=8", "grpo_rloo.zero_stage=1"])
    assert len(single) == 3
    _assert_close(single, ds, ["reward", "kl", "loss", "clip_frac"], exact=["response_length", "eos_rate"])


def test_dpo_data_parallel_matches_debug_mode(rm_dir, tmp_path):
    single, ds = _single_and_ds("dpo.py", "dpo", rm_dir, tmp_path, ("data", "sft"),
                                ["dpo.steps=4", "dpo.batch_size=8", "dpo.optim.lr=1e-3", "dpo.zero_stage=2"])
    assert len(single) == 4
    _assert_close(single, ds, ["loss", "reward_margin"], exact=["reward_accuracy"])


@pytest.mark.parametrize("zero", [2])
def test_sft_killed_under_deepspeed_resumes_from_its_checkpoint(base_dir, tmp_path, zero):
    """Two ranks SIGKILLed after an in-stage checkpoint (the weights and each rank's ZeRO optimizer shard), then
    run again: the rows equal an uninterrupted debug-mode run's within the tolerances above. A resume that lost the
    optimizer state (fresh AdamW moments) would move the next losses by far more. ZeRO-2 only, the partitioned case
    (DeepSpeed's ZeRO optimizer, a shard per rank): under stage 0 the engine's optimizer is torch's own AdamW
    (torch_adam, parallel/ds_config.py), whose state round trip the debug-mode kill test covers
    (tests/align/test_resume.py), through the same save_state/load_state (parallel/runtime.py)."""
    import os
    import signal
    import time
    from llm.align import handoff
    overrides = ["sft.steps=80", "sft.batch_size=8", "sft.eval_every=0", "sft.checkpoint_every=20",
                 f"sft.zero_stage={zero}"]
    outs = {}
    for name in ("single", "ds"):
        out = outs[name] = tmp_path / name
        out.mkdir()
        for d in ("data", "base"):
            (out / d).symlink_to(base_dir / d)
    _run([sys.executable, "launch/sft.py", "--config", str(RECIPE), f"out_dir={outs['single']}", *overrides])
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "launch/sft.py", "--config",
           str(RECIPE), f"out_dir={outs['ds']}", *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 240
    while not list((outs["ds"] / "resume" / "sft").glob("step_*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not handoff.is_complete(outs["ds"] / "sft")
    ckpt = next((outs["ds"] / "resume" / "sft").glob("step_*"))
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.optim.rank0.pt", "model.optim.rank1.pt", "model.pt",
                                                      "trainer_state.json"]
    _run(cmd[:4] + [str(free_port())] + cmd[5:])
    single, ds = ([json.loads(r) for r in (outs[n] / "logs" / "sft.metrics.jsonl").read_text().splitlines()]
                  for n in ("single", "ds"))
    assert len(single) == 80
    _assert_close(single, ds, ["loss"])
