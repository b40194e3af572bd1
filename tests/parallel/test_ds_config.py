"""The generated DeepSpeed JSON and the parallel.deepspeed pass-through (parallel/ds_config.py): only keys DeepSpeed
0.19.8 knows, none of those the training loop depends on, refused before any process group exists."""
from __future__ import annotations

import subprocess
import sys

import pytest

from llm.config import ConfigError, ModelConfig, ParallelConfig, PrecisionConfig, RunConfig, TrainConfig
from parallel.ds_config import DEEPSPEED_KEYS, GENERATED, deepspeed_config, override_errors
from parallel.topology import check_layout

MODEL = ModelConfig(n_layers=4, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=512, seq_len=32)


def _cfg(deepspeed=None, **parallel) -> RunConfig:
    return RunConfig(model=MODEL, train=TrainConfig(max_steps=5, global_batch_size=8, micro_batch_size=2),
                     parallel=ParallelConfig(deepspeed=deepspeed or {}, **parallel))


def _keys_deepspeed_reads() -> set[str]:
    """Top-level keys the installed DeepSpeed looks up while building its config from a minimal one."""
    from deepspeed.runtime import config as ds_config_module

    seen = set()

    class Recorder(dict):
        def __getitem__(self, k):
            seen.add(k)
            return super().__getitem__(k)

        def get(self, k, default=None):
            seen.add(k)
            return super().get(k, default)

        def __contains__(self, k):
            seen.add(k)
            return super().__contains__(k)

        def keys(self):  # `KEY in param_dict.keys()`
            return self

        def __copy__(self):  # DeepSpeedConfig reads a copy
            return self

    ds_config_module.DeepSpeedConfig(Recorder(train_batch_size=8, train_micro_batch_size_per_gpu=2,
                                              gradient_accumulation_steps=4))
    return seen - set(ds_config_module._REMOVED_TOP_LEVEL_CONFIG_KEYS)


def test_known_keys_are_those_the_installed_deepspeed_reads():
    initialize_reads = {"sequence_parallel_size", "data_parallel_size"}  # deepspeed/__init__.py initialize()
    assert DEEPSPEED_KEYS == _keys_deepspeed_reads() | initialize_reads


@pytest.mark.parametrize("parallel,precision", [
    (dict(), "fp32"), (dict(zero_stage=3, offload_optimizer=True, offload_params=True), "bf16"),
    (dict(tensor=2, pipeline=2, sequence_parallel=True, zero_stage=1), "fp16")])
def test_every_generated_key_is_a_deepspeed_key_and_refused_as_an_override(parallel, precision):
    cfg = _cfg(**parallel)
    cfg.precision = PrecisionConfig(dtype=precision)
    generated = deepspeed_config(cfg, 1)
    assert set(generated) <= DEEPSPEED_KEYS
    assert {path.partition(".")[0] for path in GENERATED} <= DEEPSPEED_KEYS
    for path in GENERATED:
        head, _, sub = path.partition(".")
        override = {head: {sub: 1}} if sub else {head: 1}
        (error,) = override_errors(override)
        assert error.startswith(f"parallel.deepspeed.{path} is generated from {GENERATED[path][0]}"), error


def test_refusals_name_the_key_and_where_to_set_it():
    errors = override_errors({"train_batch_size": 16, "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e8},
                              "optimizer": {"params": {"lr": 1.0}}, "bf16": True})
    assert errors == [
        "parallel.deepspeed.train_batch_size is generated from train.global_batch_size (the loop builds every "
        "step's global batch): set that instead",
        "parallel.deepspeed.optimizer is generated from optim.* (every layout and debug mode run the same AdamW): "
        "set that instead",
        "parallel.deepspeed.zero_optimization.stage is generated from parallel.zero_stage (checkpoints record it "
        "as part of the layout): set that instead",
        # a non-dict value replaces the whole generated section
        "parallel.deepspeed.bf16.enabled is generated from precision.dtype (debug mode and the loss-scale logging "
        "follow precision): set that instead"]


def test_unknown_and_removed_keys_are_refused_with_a_suggestion():
    assert override_errors({"zero_optimisation": {"stage": 1}}) == [
        "parallel.deepspeed.zero_optimisation is not a DeepSpeed 0.19.8 config key (did you mean zero_optimization?)"]
    # DeepSpeed 0.19.8 itself rejects removed features such as elasticity and curriculum_learning.
    assert [e.split(" is ")[0] for e in override_errors({"elasticity": {}, "curriculum_learning": {}})] == [
        "parallel.deepspeed.elasticity", "parallel.deepspeed.curriculum_learning"]


def test_knobs_we_do_not_model_pass_through():
    knobs = {"pipeline": {"pipe_partitioned": False, "grad_partitioned": False},
             "zero_optimization": {"reduce_bucket_size": 5e8, "overlap_comm": True}, "fp16": {"hysteresis": 4},
             "communication_data_type": "fp32", "steps_per_print": 10, "flops_profiler": {"enabled": False}}
    assert override_errors(knobs) == []
    cfg = _cfg(knobs, tensor=2, pipeline=2, sequence_parallel=True)
    ds = deepspeed_config(cfg, 1)
    assert ds["zero_optimization"] == {"stage": 0, "reduce_bucket_size": 5e8, "overlap_comm": True}
    assert ds["fp16"]["hysteresis"] == 4 and ds["steps_per_print"] == 10


def test_check_layout_refuses_overrides_and_indivisible_batches_before_any_process_group():
    with pytest.raises(ConfigError) as e:
        check_layout(_cfg({"gradient_accumulation_steps": 1, "wandb_": {}}), 2)
    assert "parallel.deepspeed.gradient_accumulation_steps is generated" in str(e.value)
    assert "parallel.deepspeed.wandb_ is not a DeepSpeed 0.19.8 config key (did you mean wandb?)" in str(e.value)
    cfg = _cfg()
    cfg.train.global_batch_size = 6
    with pytest.raises(ConfigError, match=r"train.global_batch_size=6 is not a multiple of train.micro_batch_size=2 "
                                          r"× data-parallel degree 2"):
        check_layout(cfg, 2)
    assert check_layout(_cfg(tensor=2), 2) == (2, 1, 1)  # 8 = 2 × 1 × 4 accumulation steps


@pytest.mark.parametrize("override,message", [
    ("parallel.deepspeed={train_batch_size: 4}", "parallel.deepspeed.train_batch_size is generated"),
    ("train.global_batch_size=6", "train.global_batch_size=6 is not a multiple of train.micro_batch_size=2 × "
                                  "data-parallel degree 2"),
])
def test_launched_rank_exits_2_without_waiting_for_its_peers(tiny_data, tmp_path, override, message):
    """Rank 0 of a 2-rank job started alone: a check after the rendezvous would wait for rank 1 (timeout)."""
    from tests.parallel.launcher_utils import PRETRAIN, ROOT, free_port, launch_env, launcher_config_dict, write_config
    config = write_config(tmp_path / "cfg.yaml", launcher_config_dict(tiny_data, tmp_path / "out"))
    env = launch_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": str(free_port())})
    r = subprocess.run([sys.executable, str(PRETRAIN), "--config", str(config), override], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr
