"""Single-process debug mode on the bundled corpus: learning, exact resume, divergence, mixed precision."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from llm.config import load_config
from llm.train import checkpoint as ckpt
from llm.train.debug import run_debug
from llm.train.loop import TrainingDiverged

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def metrics(out_dir) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def run(path, *overrides):
    cfg = load_config(path, list(overrides))
    return cfg, run_debug(cfg, device=torch.device("cpu"))


def test_short_run_lowers_validation_loss_well_below_uniform(tiny_config):
    cfg, out = run(tiny_config(), "train.max_steps=60", "train.eval_every=30", "train.eval_batches=2")
    train_rows, evals = metrics(cfg.out_dir)
    uniform = math.log(cfg.model.vocab_size)  # the loss of a model that knows nothing: ln 512 ≈ 6.24
    assert evals[-1]["eval_loss"] < uniform - 1.2, evals
    assert out.eval_loss == evals[-1]["eval_loss"] and out.status == "finished"
    for key in ("step", "loss", "lr", "tokens", "tokens_per_s", "mfu", "grad_norm"):
        assert key in train_rows[-1]
    assert [r["step"] for r in train_rows] == list(range(1, 61))
    assert train_rows[-1]["tokens"] == 60 * 8 * 32
    assert 0 < train_rows[-1]["mfu"] < 5  # on CPU against a measured matmul peak: a sane fraction
    # LR: linear warmup then cosine ending at min_lr_ratio·lr (Chinchilla's 10×).
    assert train_rows[0]["lr"] == pytest.approx(3e-3 / 2)
    assert train_rows[-1]["lr"] == pytest.approx(3e-4, rel=1e-3)
    assert (Path(cfg.out_dir) / "config.yaml").is_file()


def test_resume_reproduces_uninterrupted_losses_bitwise(tiny_config, tmp_path):
    """Dropout on, so resume must restore the RNG as well as weights, optimizer and data position."""
    path = tiny_config(model={"dropout": 0.1}, checkpoint={"every": 3, "keep": 5})
    cfg, _ = run(path)
    full, full_evals = metrics(cfg.out_dir)
    # Simulate a crash after the step-3 checkpoint: keep only it, with a stale half-written one beside it.
    ckdir = Path(cfg.checkpoint.dir)
    shutil.rmtree(ckdir / "step_00000006")
    (ckdir / ".tmp-step_00000006").mkdir()
    (ckdir / "step_00000005").mkdir()  # no trainer_state.json: incomplete, must be ignored
    assert ckpt.latest_checkpoint(ckdir).name == "step_00000003"
    _, out = run(path)
    resumed, resumed_evals = metrics(cfg.out_dir)
    assert out.step == 6
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]  # exact, not approximate
    assert [r["eval_loss"] for r in resumed_evals] == [r["eval_loss"] for r in full_evals]


def test_rerunning_a_finished_run_does_no_more_steps(tiny_config):
    path = tiny_config(train={"max_steps": 2, "eval_every": 0})
    run(path)
    _, out = run(path)
    assert out.step == 2 and out.last_loss is None


def test_divergence_names_step_and_first_nonfinite(tiny_config):
    path = tiny_config(optim={"lr": 1e30, "warmup_steps": 0, "grad_clip": 0.0})
    with pytest.raises(TrainingDiverged, match=r"at step \d+; first non-finite: (gradient of|parameter) \w"):
        run(path)


def test_fp16_dynamic_loss_scaling_skips_overflow_steps(tiny_config):
    """A start scale of 2^32 overflows fp16 gradients: those steps are skipped and the scale halves."""
    cfg, out = run(tiny_config(precision={"dtype": "fp16", "initial_loss_scale": 2.0 ** 32}),
                   "train.max_steps=12")
    rows, _ = metrics(cfg.out_dir)
    skipped = [r for r in rows if r["skipped"]]
    assert skipped and rows[0]["skipped"] and rows[0]["loss_scale"] == 2.0 ** 32
    assert rows[len(skipped)]["loss_scale"] == 2.0 ** (32 - len(skipped))
    assert not rows[-1]["skipped"] and math.isfinite(out.last_loss)


def test_bf16_tracks_fp32(tiny_config):
    c32, _ = run(tiny_config("fp32"))
    c16, _ = run(tiny_config("bf16", precision="bf16"))
    l32 = [r["loss"] for r in metrics(c32.out_dir)[0]]
    l16 = [r["loss"] for r in metrics(c16.out_dir)[0]]
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 ≈ 0.2%); after a few updates ~1% apart is expected.
    assert l16 != l32
    assert all(abs(a - b) / a < 0.03 for a, b in zip(l32, l16)), (l32, l16)
