"""A checkpoint is data, never code: a crafted pickle on every load path is refused in one line, exit 2, and its
code never runs (the marker file it would create never appears)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm.train import checkpoint as ckpt
from llm.train import safe_load
from tests.conftest import ROOT
from tests.safety_utils import Payload, plant

PRETRAIN = ROOT / "launch" / "pretrain.py"


def run_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_refused(proc: subprocess.CompletedProcess, file_name: str, marker: Path) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "refusing to load" in lines[0] and file_name in lines[0], lines[0]
    assert not marker.exists(), "the crafted pickle ran its code"


@pytest.fixture(scope="module")
def debug_run(tiny_data, tmp_path_factory):
    """A finished 2-step debug-mode run with its step-2 checkpoint."""
    from tests.conftest import tiny_config_dict
    import yaml
    root = tmp_path_factory.mktemp("safe")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_data, root / "run", train={"max_steps": 2})))
    proc = run_cli(PRETRAIN, "--config", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config, root / "run"


def tampered_copy(debug_run, tmp_path, file_name: str, marker: Path) -> Path:
    """A copy of the run whose step-2 checkpoint has `file_name` planted with the payload."""
    _, run_dir = debug_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    step = copy / "checkpoints" / "step_00000002"
    plant(step / file_name, marker)
    return copy


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(safe_load.CheckpointRefused, match=r"evil\.pt.*builtins\.exec"):
        safe_load.load(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save({"w": torch.ones(2)}, tmp_path / "good.pt")
    assert torch.equal(safe_load.load(tmp_path / "good.pt")["w"], torch.ones(2))


def test_truncated_and_foreign_files_are_refused_in_one_line(tmp_path):
    torch.save({"w": torch.zeros(100)}, tmp_path / "good.pt")
    (tmp_path / "torn.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    import pickle
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"w": 1}))  # a bare pickle, not a torch.save archive
    for name in ("torn.pt", "plain.pt"):
        with pytest.raises(safe_load.CheckpointRefused, match=f"{name}: not a readable torch.save archive") as e:
            safe_load.load(tmp_path / name)
        assert "\n" not in str(e.value)


def test_forced_weights_only_overrides_deepspeed_style_loads(tmp_path):
    """DeepSpeed calls torch.load(..., weights_only=False); after force_weights_only torch ignores that."""
    marker = tmp_path / "ran"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pt")
    code = ("import torch, sys; from llm.train.safe_load import force_weights_only; force_weights_only()\n"
            f"try:\n    torch.load({str(tmp_path / 'evil.pt')!r}, weights_only=False)\n"
            "except Exception as e:\n    print(type(e).__name__); sys.exit(0)\nsys.exit(1)")
    proc = run_cli("-c", code)
    assert proc.returncode == 0 and "UnpicklingError" in proc.stdout, proc.stdout + proc.stderr
    assert not marker.exists()


def test_rng_state_round_trips_through_json(tmp_path):
    import random
    import numpy as np
    torch.rand(3), random.random(), np.random.rand()
    ckpt.save_rng_state(tmp_path, 0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(7), random.random(), np.random.rand()
    assert ckpt.load_rng_state(tmp_path, 0)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    json.loads((tmp_path / "rng_rank0.json").read_text())  # plain JSON, nothing to unpickle


@pytest.mark.parametrize("file_name", ["model.pt", "optimizer.pt"])
def test_resume_refuses_a_crafted_checkpoint(debug_run, tmp_path, file_name):
    config, _ = debug_run
    marker = tmp_path / "ran"
    copy = tampered_copy(debug_run, tmp_path, file_name, marker)
    proc = run_cli(PRETRAIN, "--config", config, f"out_dir={copy}", f"checkpoint.dir={copy / 'checkpoints'}",
                   "train.max_steps=3")
    assert_refused(proc, file_name, marker)


def test_resume_refuses_a_crafted_legacy_rng_pickle(debug_run, tmp_path):
    config, _ = debug_run
    marker = tmp_path / "ran"
    copy = tmp_path / "run"
    shutil.copytree(debug_run[1], copy)
    step = copy / "checkpoints" / "step_00000002"
    (step / "rng_rank0.json").unlink()
    torch.save({"torch": torch.get_rng_state(), "x": Payload(marker)}, step / "rng_rank0.pt")
    proc = run_cli(PRETRAIN, "--config", config, f"out_dir={copy}", f"checkpoint.dir={copy / 'checkpoints'}",
                   "train.max_steps=3")
    assert_refused(proc, "rng_rank0.pt", marker)


def test_eval_only_and_init_from_refuse_crafted_weights(debug_run, tmp_path):
    config, _ = debug_run
    marker = tmp_path / "ran"
    copy = tampered_copy(debug_run, tmp_path, "model.pt", marker)
    proc = run_cli(PRETRAIN, "--config", config, f"out_dir={copy}", f"checkpoint.dir={copy / 'checkpoints'}",
                   "--eval-only")
    assert_refused(proc, "model.pt", marker)
    fresh = tmp_path / "fresh"
    proc = run_cli(PRETRAIN, "--config", config, f"out_dir={fresh}", f"checkpoint.dir={fresh / 'checkpoints'}",
                   f"checkpoint.init_from={copy / 'checkpoints' / 'step_00000002'}")
    assert_refused(proc, "model.pt", marker)


def test_consolidate_refuses_crafted_weights(debug_run, tmp_path):
    marker = tmp_path / "ran"
    copy = tampered_copy(debug_run, tmp_path, "model.pt", marker)
    proc = run_cli(ROOT / "launch" / "consolidate.py", copy / "checkpoints" / "step_00000002",
                   "--output", tmp_path / "out.pt")
    assert_refused(proc, "model.pt", marker)
    assert not (tmp_path / "out.pt").exists()


def test_alignment_handoff_refuses_crafted_weights(tiny_data, tmp_path):
    from llm.align import handoff
    from llm.config import ModelConfig
    from llm.model import Transformer
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64, vocab_size=512, seq_len=16)
    handoff.save_stage(tmp_path / "sft", "sft", Transformer(cfg), tiny_data["tokenizer"], "{}", {})
    marker = tmp_path / "ran"
    plant(tmp_path / "sft" / "model.pt", marker)
    with pytest.raises(safe_load.CheckpointRefused, match="model.pt"):
        handoff.load_stage(tmp_path / "sft", "lm")
    assert not marker.exists()


def test_pipeline_layer_files_are_refused_when_crafted(tmp_path):
    from llm.config import ModelConfig
    from parallel.pipeline_checkpoint import load_pipeline_checkpoint
    marker = tmp_path / "ran"
    torch.save({"weight": torch.zeros(4, 4), "x": Payload(marker)}, tmp_path / "layer_00-model_00-model_states.pt")
    with pytest.raises(safe_load.CheckpointRefused, match="layer_00-model_00-model_states.pt"):
        load_pipeline_checkpoint(tmp_path, ModelConfig(n_layers=1, d_model=4, n_heads=1, d_ff=8, vocab_size=64,
                                                       seq_len=8))
    assert not marker.exists()
