"""The layout-equivalence matrix: the same config trained by `deepspeed` under several data/tensor-parallel
and ZeRO layouts gives, step for step, the single-process debug run's training losses.

Tolerances. fp32: 1e-5 relative. Every layout computes the same global-batch mean gradient; only the order of
floating-point sums differs (all-reduce over ranks, sharded matmuls summed across TP ranks), which moves
a loss of ~6 by a few ulps of fp32 per step (~1e-7 relative) and compounds over 5 Adam steps to well under
1e-5. bf16: 2e-2 relative against the single-process bf16-autocast run. DeepSpeed's bf16 keeps the
weights themselves in bf16 (fp32 master copy in the optimizer) while autocast keeps fp32 weights and rounds
only matmul inputs, so the two differ by bf16 rounding (2^-9 ≈ 2e-3 per operation) accumulated through the
layers; the check still catches a wrong layout, which moves the loss by far more (e.g. a gradient missing
its 1/dp scaling doubles the update). Pipeline layouts are in test_pipeline.py.
"""
import pytest

from tests.parallel.launcher_utils import (launcher_config_dict, loss_table, max_rel_diff, run_deepspeed, run_single,
                                           train_losses, write_config)

FP32_TOL = 1e-5
BF16_TOL = 2e-2

LAYOUTS = {
    # name: (world size, overrides)
    "dp2-zero0": (2, ["parallel.zero_stage=0"]),
    "dp2-zero1": (2, ["parallel.zero_stage=1"]),
    "dp2-zero2": (2, ["parallel.zero_stage=2"]),
    "dp2-zero3": (2, ["parallel.zero_stage=3"]),
    # ZeRO-Offload: optimizer states (DeepSpeed's CPU Adam) and parameters in CPU memory.
    "dp2-zero3-offload": (2, ["parallel.zero_stage=3", "parallel.offload_optimizer=true",
                              "parallel.offload_params=true"]),
    "tp2": (2, ["parallel.tensor=2"]),
    "tp2-dp2-zero1": (4, ["parallel.tensor=2", "parallel.zero_stage=1"]),
}
BF16_LAYOUTS = {
    "dp2-zero2-bf16": (2, ["parallel.zero_stage=2", "precision=bf16"]),
    "tp2-bf16": (2, ["parallel.tensor=2", "precision=bf16"]),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("equivalence")
    data = tiny_data
    config = write_config(root / "cfg.yaml", launcher_config_dict(data, root / "unused"))
    return root, config


@pytest.fixture(scope="module")
def reference(setup):
    root, config = setup
    run_single(config, root / "single-fp32")
    run_single(config, root / "single-bf16", ["precision=bf16"])
    return {"fp32": train_losses(root / "single-fp32"), "bf16": train_losses(root / "single-bf16")}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_fp32_layout_matches_single_process(setup, reference, name):
    root, config = setup
    world, overrides = LAYOUTS[name]
    run_deepspeed(config, root / name, world, overrides)
    losses = train_losses(root / name)
    assert len(losses) == 5
    assert max_rel_diff(reference["fp32"], losses) < FP32_TOL, loss_table(reference["fp32"], {name: losses})


@pytest.mark.parametrize("name", list(BF16_LAYOUTS))
def test_bf16_layout_matches_single_process_bf16(setup, reference, name):
    root, config = setup
    world, overrides = BF16_LAYOUTS[name]
    run_deepspeed(config, root / name, world, overrides)
    losses = train_losses(root / name)
    assert max_rel_diff(reference["bf16"], losses) < BF16_TOL, loss_table(reference["bf16"], {name: losses})
    # bf16 really ran (not silently fp32): its losses are not the fp32 ones.
    assert max_rel_diff(reference["fp32"], losses) > 1e-6
