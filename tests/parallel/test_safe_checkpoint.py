"""The files DeepSpeed loads for us are data too: a crafted pickle inside a DeepSpeed checkpoint is refused before
DeepSpeed's engine (resume) or its universal-checkpoint converter (checkpoint.reshard) opens it."""
import shutil

import pytest

from tests.parallel.launcher_utils import (LaunchError, launcher_config_dict, prepare_tiny_data, run_deepspeed,
                                           write_config)
from tests.safety_utils import plant


@pytest.fixture(scope="module")
def zero1_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe_ds")
    data = prepare_tiny_data(root / "data")
    config = write_config(root / "cfg.yaml", launcher_config_dict(data, root / "unused", train={"max_steps": 2}))
    run_deepspeed(config, root / "z1", 2, ["parallel.zero_stage=1"])
    return root, config


@pytest.mark.parametrize("file_name, world, overrides", [
    ("mp_rank_00_model_states.pt", 2, ["parallel.zero_stage=1"]),
    # checkpoint.reshard: DP2 ZeRO-1 → DP1 ZeRO-2 goes through DeepSpeed's universal converter.
    ("zero_pp_rank_1_mp_rank_00_optim_states.pt", 1, ["parallel.zero_stage=2", "checkpoint.reshard=true"]),
])
def test_deepspeed_loads_refuse_a_crafted_pickle(zero1_run, tmp_path, file_name, world, overrides):
    root, config = zero1_run
    copy = tmp_path / "z1"
    shutil.copytree(root / "z1", copy)
    marker = tmp_path / "ran"
    plant(copy / "checkpoints" / "step_00000002" / "deepspeed" / file_name, marker)
    with pytest.raises(LaunchError) as e:
        run_deepspeed(config, copy, world, [*overrides, f"checkpoint.dir={copy / 'checkpoints'}", "train.max_steps=3"])
    out = str(e.value)
    assert out.startswith("exit 2"), out[-3000:]
    assert f"refusing to load {copy / 'checkpoints' / 'step_00000002' / 'deepspeed' / file_name}" in out, out[-3000:]
    assert "Traceback" not in out and not marker.exists()
    assert not (copy / "checkpoints" / "step_00000002" / "deepspeed_universal").exists()
