import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llm.config import ConfigError, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("raw, rule", [
    ({"optim": {"eps": 0}}, "optim.eps=0.0 must be positive"),
    ({"optim": {"eps": -1e-8}}, "optim.eps=-1e-08 must be positive"),
    ({"model": {"rope_theta": 0}}, "model.rope_theta=0.0 must be positive"),
    ({"model": {"norm_eps": -1e-5}}, "model.norm_eps=-1e-05 must be positive"),
    ({"model": {"init_std": 0}}, "model.init_std=0.0 must be positive"),
    ({"optim": {"warmup_steps": 11}, "train": {"max_steps": 10}}, "optim.warmup_steps=11 is longer than the run's 10"),
    # With train.tokens the run's length is ceil(tokens / (global_batch_size·seq_len)) = 4 steps here.
    ({"optim": {"warmup_steps": 5}, "train": {"tokens": 4000, "global_batch_size": 4}, "model": {"seq_len": 256}},
     "optim.warmup_steps=5 is longer than the run's 4"),
    ({"optim": {"lr": float("nan")}}, "optim.lr must be a finite number, got nan"),
    ({"model": {"rope_theta": float("inf")}}, "model.rope_theta must be a finite number, got inf"),
    ({"train": {"max_steps": 5, "seed": -1}}, r"train.seed=-1 must be in \[0, 2\*\*32\)"),
    ({"parallel": {"pipeline_partition": "layers"}}, "parallel.pipeline_partition='layers' must be"),
    ({"model": {"d_model": 250, "n_heads": 4}}, "n_heads=4 does not divide model.d_model=250: set model.head_dim"),
])
def test_new_rules_name_the_key(tmp_path, raw, rule):
    raw.setdefault("data", {"paths": ["x"]})
    with pytest.raises(ConfigError, match=rule):
        load_config(write(tmp_path, raw))


def test_warmup_as_long_as_the_run_is_allowed(tmp_path):
    cfg = load_config(write(tmp_path, {"data": {"paths": ["x"]}, "optim": {"warmup_steps": 4},
                                       "train": {"max_steps": 4}}))
    assert cfg.optim.warmup_steps == cfg.total_steps == 4


def test_optim_validate_checks_warmup_against_given_steps():
    # The alignment stages validate their own OptimConfig against their own step counts.
    OptimConfig(warmup_steps=10).validate("sft.optim")  # no run length given: nothing to compare with
    OptimConfig(warmup_steps=10).validate("sft.optim", total_steps=10)
    with pytest.raises(ConfigError, match="sft.optim.warmup_steps=10 is longer than the run's 9"):
        OptimConfig(warmup_steps=10).validate("sft.optim", total_steps=9)


def test_decoupled_head_dim_is_accepted(tmp_path):
    cfg = load_config(write(tmp_path, {"data": {"paths": ["x"]}, "model": {"d_model": 250, "n_heads": 4,
                                                                           "head_dim": 64}}))
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.head_dim) == (250, 4, 64)


def test_validate_does_not_mutate(tmp_path):
    cfg = load_config(write(tmp_path, {"data": {"paths": ["x"]}, "out_dir": "runs/x"}))
    assert cfg.checkpoint.dir == str(Path("runs/x") / "checkpoints")  # derived at construction
    for c in (cfg, RunConfig(data=DataConfig(paths=["x"]), out_dir="y"), RunConfig(data=DataConfig(paths=["x"]),
                                                                                   train=TrainConfig(tokens=10**6))):
        before = dataclasses.asdict(c)
        c.validate()
        assert dataclasses.asdict(c) == before


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("train:\n  max_steps: 5\ndata:\n  paths: [x]\ntrain:\n  max_steps: 50\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: key 'train' is defined twice \(lines 1 and 5\)"):
        load_config(p)
    p.write_text("model:\n  d_model: 64\n  n_heads: 4\n  d_model: 128\ndata:\n  paths: [x]\n")
    with pytest.raises(ConfigError, match=r"key 'model.d_model' is defined twice \(lines 2 and 4\)"):
        load_config(p)


@pytest.mark.parametrize("text, rule", [
    ("model: [\n", "is not valid YAML: line 2, column 1"),
    ("- a\n- b\n", "the top level must be a mapping"),
])
def test_malformed_yaml_is_one_line(tmp_path, text, rule):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=rule) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_override_value_that_is_not_yaml(tmp_path):
    path = write(tmp_path, {"data": {"paths": ["x"]}})
    with pytest.raises(ConfigError, match="the value of 'model.d_model' is not valid YAML") as e:
        load_config(path, ["model.d_model=[1"])
    assert "\n" not in str(e.value)
