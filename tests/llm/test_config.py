import subprocess
import sys

import pytest
import yaml

from llm.config import ConfigError, ModelConfig, load_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def write(tmp_path, raw) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def test_defaults_derive_shape_fields():
    m = ModelConfig(d_model=256, n_heads=8)
    assert (m.head_dim, m.n_kv_heads, m.d_ff) == (32, 8, 704)  # 8/3·256 = 682.7 → next multiple of 64


def test_unknown_key_names_file_key_and_closest(tmp_path):
    path = write(tmp_path, {"model": {"n_layer": 2}, "data": {"paths": ["x"]}, "train": {"max_steps": 1}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert path in msg and "'model.n_layer'" in msg and "did you mean 'model.n_layers'" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optimizer'.*'optim'"):
        load_config(write(tmp_path, {"optimizer": {}}))


@pytest.mark.parametrize("raw, rule", [
    ({"model": {"d_model": 100, "n_heads": 8}}, "n_heads=8 does not divide model.d_model=100"),
    ({"model": {"n_heads": 8, "n_kv_heads": 3}}, "n_kv_heads=3 must divide model.n_heads=8"),
    ({"train": {"max_steps": 5, "global_batch_size": 10, "micro_batch_size": 4}},
     "micro_batch_size=4 does not divide train.global_batch_size=10"),
    ({"train": {"max_steps": 5, "tokens": 100}}, "exactly one of train.max_steps and train.tokens"),
    ({"train": {"max_steps": "many"}}, "train.max_steps must be an integer"),
    ({"parallel": {"pipeline": 2, "zero_stage": 2}}, "supports ZeRO stage 0 or 1 only"),
    ({"precision": "fp8"}, "precision.dtype='fp8' must be"),
    ({"data": {"paths": []}}, "data.paths is empty"),
])
def test_impossible_values_name_the_rule(tmp_path, raw, rule):
    raw.setdefault("data", {"paths": ["x"]})
    with pytest.raises(ConfigError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, raw))


def test_overrides_and_shorthands(tmp_path):
    path = write(tmp_path, {"data": {"paths": "a"}, "train": {"max_steps": 5}})
    cfg = load_config(path, ["train.max_steps=20", "precision=bf16", "optim.lr=1e-3", "data.weights=[1]",
                             "train.tokens=null"])
    assert cfg.train.max_steps == 20 and cfg.precision.dtype == "bf16" and cfg.optim.lr == 1e-3
    assert cfg.data.paths == ["a"] and cfg.data.weights == [1.0]
    with pytest.raises(ConfigError, match="unknown key 'train.max_step'"):
        load_config(path, ["train.max_step=3"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(path, ["train.max_steps"])


def test_tokens_give_total_steps(tmp_path):
    cfg = load_config(write(tmp_path, {"data": {"paths": ["a"]}, "train": {"tokens": 1e6, "global_batch_size": 8},
                                       "model": {"seq_len": 128}}))
    assert cfg.total_steps == -(-1_000_000 // 1024)


def test_cli_prints_one_line_not_a_traceback(tmp_path):
    path = write(tmp_path, {"model": {"n_layer": 2}})
    r = subprocess.run([sys.executable, str(ROOT / "launch" / "pretrain.py"), "--config", path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "did you mean 'model.n_layers'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
