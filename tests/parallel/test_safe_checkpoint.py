"""The files DeepSpeed loads for us are data too: a crafted pickle inside a DeepSpeed checkpoint is refused before
DeepSpeed's engine (resume) or its universal-checkpoint converter (checkpoint.reshard) opens it."""
import shutil

import pytest

from tests.parallel.launcher_utils import (LaunchError, launcher_config_dict, run_deepspeed,
                                           write_config)
from tests.safety_utils import plant


@pytest.fixture(scope="module")
def zero1_run(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("safe_ds")
    data = tiny_data
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


def test_the_audit_follows_symlinked_folders(tmp_path):
    """A folder linked into a checkpoint is audited like one inside it (Path.rglob does not enter links; DeepSpeed
    opens the files through them), a link cycle ends, and a *.pt link to nothing is refused: each one line."""
    import torch

    from llm.train.safe_load import CheckpointRefused, audit_tree, pickle_files
    from tests.safety_utils import Payload

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    torch.save({"w": torch.zeros(2), "x": Payload(tmp_path / "ran")}, outside / "mp_rank_00_model_states.pt")
    ckpt = tmp_path / "ckpt" / "step_00000002"
    ckpt.mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, ckpt / "model.pt")
    (ckpt / "deepspeed").symlink_to(outside, target_is_directory=True)
    (outside / "loop").symlink_to(ckpt, target_is_directory=True)  # a cycle: ckpt → elsewhere → ckpt
    assert sorted(f.name for f in pickle_files(ckpt)) == ["model.pt", "mp_rank_00_model_states.pt"]
    with pytest.raises(CheckpointRefused, match=r"deepspeed/mp_rank_00_model_states\.pt: its pickle calls builtins"):
        audit_tree(ckpt)
    (outside / "mp_rank_00_model_states.pt").unlink()
    (ckpt / "dangling.pt").symlink_to(tmp_path / "gone.pt")
    with pytest.raises(CheckpointRefused, match=r"dangling\.pt: a symlink to .*gone\.pt, which does not exist"):
        audit_tree(ckpt)
    assert not (tmp_path / "ran").exists()
