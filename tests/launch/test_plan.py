"""launch/plan.py end to end, as a subprocess: table, --json, --write-config, one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm.config import load_config
from llm.spec.plan import config_dict, plan
from llm.spec.scaling import compute_optimal
from llm.spec.shape import count_params

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_table():
    out = run("--flops", "1e19")
    assert out.returncode == 0, out.stderr
    assert "tokens per parameter" in out.stdout and "n_layers=" in out.stdout


@pytest.mark.parametrize("approach", ["1", "2", "3", "besiroglu"])
def test_json(approach):
    out = run("--flops", "1e20", "--approach", approach, "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    for key in ("n_params", "n_tokens", "flops", "predicted_loss", "tokens_per_param", "model"):
        assert key in spec
    assert spec["flops"] == 1e20
    # D is re-derived from the exact N of the shape, so the budget holds to within one token.
    assert 6 * spec["n_params"] * spec["n_tokens"] == pytest.approx(1e20, rel=1e-9)
    assert spec["tokens_per_param"] == pytest.approx(spec["n_tokens"] / spec["n_params"])
    from llm.config import ModelConfig
    assert count_params(ModelConfig(**spec["model"])) == spec["n_params"]
    n_law, _ = compute_optimal(1e20, approach)
    assert abs(spec["n_params"] / n_law - 1) < 0.15  # the shape lands near the law's N
    assert 1.8 < spec["predicted_loss"] < 3.5


def test_gpu_hours():
    out = run("--gpu-hours", "1000", "--gpu", "h100", "--mfu", "0.4", "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    assert spec["flops"] == pytest.approx(1000 * 3600 * 989.4e12 * 0.4)
    assert spec["accelerator_hours"] == pytest.approx(1000)


def test_write_config(tmp_path):
    path = tmp_path / "sub" / "plan.yaml"
    out = run("--flops", "3e19", "--write-config", str(path))
    assert out.returncode == 0, out.stderr
    text = path.read_text()
    assert text.startswith("#") and "DeepSeek" in text and "Chinchilla" in text
    cfg = load_config(path)
    spec = plan(3e19)
    assert cfg.train.tokens == spec.n_tokens
    assert cfg.optim.min_lr_ratio == 0.1
    assert cfg.data.paths == ["runs/data/python_docs/data"]
    assert cfg.model.d_model == spec.model.d_model and count_params(cfg.model) == spec.n_params
    # The cosine runs over the planned tokens: steps × tokens per step covers D by less than one batch.
    assert 0 <= cfg.total_steps * cfg.tokens_per_step - spec.n_tokens < cfg.tokens_per_step
    assert 0 < cfg.optim.warmup_steps <= 0.02 * cfg.total_steps + 1
    assert cfg.precision.dtype == "bf16"


def test_config_dict_validates():
    raw = config_dict(plan(1e18, vocab_size=4096, seq_len=512, tp_degrees=(1,)), data_paths=["a", "b"], out_dir="x")
    assert raw["data"]["paths"] == ["a", "b"] and raw["out_dir"] == "x"


@pytest.mark.parametrize("args,message", [
    ((), "one of the arguments --flops --gpu-hours is required"),
    (("--flops", "-1"), "must be positive"),
    (("--flops", "abc"), "invalid float"),
    (("--flops", "1e12"), "smallest shape"),
    (("--gpu-hours", "10", "--gpu", "b9000"), "unknown accelerator"),
    (("--flops", "1e19", "--approach", "kaplan"), "invalid choice"),
    (("--flops", "1e19", "--mfu", "2"), "mfu"),
    (("--flops", "1e19", "--tp-degrees", "1,x"), "comma-separated"),
])
def test_errors_are_one_line(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr
