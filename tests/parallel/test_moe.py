"""Mixture-of-experts under the DeepSpeed launcher (AutoEP) against the single-process debug run of the same config.

A tiny MoE (4 experts, top-2, one shared expert, 2 blocks) trained for 4 steps:
  * expert parallelism (parallel.expert=2) with ZeRO-1, ZeRO-3, and ZeRO-2 with every block recomputed, give the
    debug run's per-step losses and gradient norms within 1e-5 relative (fp32: the same global-batch mean gradient,
    only the order of sums differs; measured 2e-8). AutoEP's layer computes our routing: its logits are
    bit-identical at ep=2 on gloo.
  * the consolidated model.pt of an ep=2 run has llm/model.py's names and full expert tensors;
  * resume at the same layout is bitwise; a checkpoint saved at ep=2 resumes at ep=1 (checkpoint.reshard, through
    DeepSpeed's universal checkpoint; at ep=1 the launcher still runs AutoEP's layer) within the same 1e-5;
  * the routing columns (per-layer expert load, router entropy) equal debug mode's.
"""
import shutil

import pytest
import torch

from tests.parallel.launcher_utils import (launcher_config_dict, loss_table, max_rel_diff, read_metrics, run_deepspeed,
                                           run_single, train_losses, write_config)

TOL = 1e-5
MOE = {"experts": 4, "top_k": 2, "expert_d_ff": 64, "shared_experts": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("moe")
    cfg = launcher_config_dict(tiny_data, root / "unused", model={"n_layers": 2, "moe": MOE}, train={"max_steps": 4},
                               checkpoint={"every": 2, "keep": 2})
    config = write_config(root / "cfg.yaml", cfg)
    run_single(config, root / "single")
    return root, config


def norms(out_dir) -> dict[int, float]:
    return {r["step"]: r["grad_norm"] for r in read_metrics(out_dir) if "grad_norm" in r}


def routing(out_dir) -> list:
    return [(r["step"], r["moe_load"], r["moe_router_entropy"]) for r in read_metrics(out_dir) if "moe_load" in r]


@pytest.mark.parametrize("name,world,overrides", [
    ("ep2-zero1", 2, ["parallel.expert=2", "parallel.zero_stage=1"]),
    ("ep2-zero3", 2, ["parallel.expert=2", "parallel.zero_stage=3", "checkpoint.every=0"]),
    ("ep2-zero2-recompute", 2, ["parallel.expert=2", "parallel.zero_stage=2", "parallel.activation_checkpointing=full",
                                "checkpoint.every=0"]),
])
def test_layout_matches_single_process(setup, name, world, overrides):
    root, config = setup
    run_deepspeed(config, root / name, world, overrides)
    ref, losses = train_losses(root / "single"), train_losses(root / name)
    assert len(losses) == 4
    assert max_rel_diff(ref, losses) < TOL, loss_table(ref, {name: losses})
    # The clipping norm covers every expert, wherever it lives (ZeRO-1/3 reduce it over the ranks).
    assert max_rel_diff(norms(root / "single"), norms(root / name)) < TOL
    for (_, load, entropy), (_, ref_load, ref_entropy) in zip(routing(root / name), routing(root / "single")):
        assert torch.allclose(torch.tensor(load), torch.tensor(ref_load), atol=1e-3)
        assert abs(entropy - ref_entropy) < 1e-4


def test_consolidated_weights_have_model_names(setup):
    root, _ = setup
    step = "checkpoints/step_00000004/model.pt"
    ours = torch.load(root / "single" / step, weights_only=True)
    theirs = torch.load(root / "ep2-zero1" / step, weights_only=True)
    assert sorted(ours) == sorted(theirs)
    assert theirs["layers.0.mlp.experts.w_gate"].shape == (4, 64, 64)
    for name in ours:  # 4 Adam steps of lr 3e-3 from the same start: equal to Adam's amplified rounding
        assert torch.allclose(ours[name], theirs[name], atol=1e-3), name


def test_resume_same_layout_is_bitwise_and_ep2_resumes_at_ep1(setup, tmp_path):
    root, config = setup
    full = train_losses(root / "ep2-zero1")
    first = tmp_path / "first-half"
    run_deepspeed(config, first, 2, ["parallel.expert=2", "parallel.zero_stage=1", "train.max_steps=2"])
    for name, overrides in (("resume-ep2", ["parallel.expert=2"]),
                            ("reshard-ep1", ["parallel.expert=1", "checkpoint.reshard=true"])):
        out = tmp_path / name
        shutil.copytree(first, out)  # the same step-2 checkpoint for both (it records its own out_dir nowhere)
        run_deepspeed(config, out, 2, ["parallel.zero_stage=1", *overrides])
        losses = train_losses(out)
        if name == "resume-ep2":
            assert losses == full, loss_table(full, {name: losses})
        else:
            assert max_rel_diff(full, losses) < TOL, loss_table(full, {name: losses})
