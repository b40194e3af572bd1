"""llm/sweep/points.py in-process on the tiny dataset: each point's config, the sweep record, and what a rerun
accepts as the same sweep (tests/launch/test_sweep.py trains them)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from llm.config import load_config
from llm.sweep import UserError
from llm.sweep.points import EVAL_TOKENS, point_config, prepare, resolve_data
from tests.parallel.launcher_utils import launcher_config_dict, write_config


@pytest.fixture(scope="module")
def base(tiny_data, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("points_base")
    return write_config(d / "base.yaml", launcher_config_dict(tiny_data, d / "unused",
                                                              train={"global_batch_size": 64, "micro_batch_size": 64}))


def _args(base: Path, out: Path, **changes) -> SimpleNamespace:
    """launch/sweep.py's arguments for tests/launch/test_sweep.py's sweep."""
    return SimpleNamespace(**{"config": str(base), "law": "besiroglu", "budgets": [3e10, 6e10], "sizes_per_budget": 3,
                              "spread": 0.25, "shapes": "standard", "eval_tokens": 8192, "seeds": 1, "out": str(out),
                              **changes})


def test_every_point_gets_a_config_and_the_sweep_a_record(base, tmp_path):
    out = tmp_path / "s"
    doc = prepare(_args(base, out))
    assert json.loads((out / "sweep.json").read_text()) == doc
    assert (out / "points.txt").read_text().split() == [p["name"] for p in doc["points"]] and len(doc["points"]) == 6
    assert doc["args"]["config"] == str(base.resolve()) and doc["data"]["valid_samples"] > 0
    for p in doc["points"]:
        path = out / "points" / p["name"] / "config.yaml"
        assert path.read_text().startswith(f"# isoFLOP sweep point {p['name']} (launch/sweep.py): C = ")
        cfg = load_config(path)
        assert cfg.out_dir == str(out / "points" / p["name"] / "run") and cfg.train.tokens == p["n_tokens"]
        assert all(Path(q).is_absolute() for q in cfg.data.paths) and cfg.train.eval_every == 0
        assert cfg.checkpoint.every == max(1, p["total_steps"] // 4) and cfg.train.seed == p["seed"] == 0
        assert p["eval_samples"] == cfg.train.eval_batches * cfg.train.global_batch_size
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("points/*/config.yaml")}
    assert prepare(_args(base, out)) == doc  # a rerun: the same sweep, its configs left as they were
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("points/*/config.yaml")} == written


def test_a_point_without_a_known_validation_split_keeps_the_base_configs_evaluation(base, tmp_path):
    from llm.scaling.laws import get_law
    from llm.scaling.grid import design_grid
    point = design_grid([3e10, 6e10], 3, get_law("besiroglu"), 512, 32, spread_dex=0.25).points[0]
    raw_base = yaml.safe_load(base.read_text())
    raw = point_config(point, raw_base, load_config(base), tmp_path / "run", base, None, EVAL_TOKENS, seed=7)
    assert raw["train"]["eval_batches"] == raw_base["train"]["eval_batches"] and raw["train"]["seed"] == 7
    assert raw["train"]["global_batch_size"] % raw["train"]["micro_batch_size"] == 0


@pytest.mark.parametrize("setup, message", [
    (lambda out: (out / "sweep.json").write_text('{"args": {'), "is a damaged sweep directory"),
    (lambda out: (out / "sweep.json").write_text('{"points": []}'), "not a sweep record"),
    (lambda out: (out / "notes.txt").write_text("mine"), "is not a sweep directory (no sweep.json)")])
def test_a_directory_that_is_not_this_sweep_is_refused(base, tmp_path, setup, message):
    out = tmp_path / "s"
    out.mkdir()
    setup(out)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(_args(base, out))
    assert not (out / "points").exists()


def test_another_sweeps_arguments_are_another_sweep(base, tmp_path):
    out = tmp_path / "s"
    prepare(_args(base, out))
    with pytest.raises(UserError, match="holds another sweep"):
        prepare(_args(base, out, eval_tokens=4096))


def test_a_base_config_without_data_is_refused(tmp_path):
    with pytest.raises(UserError, match="data.paths is empty"):
        resolve_data({"data": {"paths": []}}, tmp_path / "base.yaml")


FAMILIES = [["dense"], ["moe4", "experts=4", "top_k=1"]]


def test_each_family_trains_every_point_with_its_model_moe(base, tmp_path):
    """--family: each grid point once per family, on the same shape, with the family's model.moe in its config, and
    D from the family's own FLOPs per token (llm/cost/flops.py, whatever it counts for experts: no count here)."""
    from llm.cost.flops import flops_per_token
    out = tmp_path / "s"
    doc = prepare(_args(base, out, family=FAMILIES, budgets=[6e10, 1.2e11]))
    assert doc["args"]["families"] == [{"name": "dense", "moe": None}, {"name": "moe4", "moe": {"experts": 4,
                                                                                               "top_k": 1}}]
    by_family = {f: [p for p in doc["points"] if p["family"] == f] for f in ("dense", "moe4")}
    assert len(by_family["dense"]) == len(by_family["moe4"]) == 6 and len(doc["points"]) == 12
    for dense, moe in zip(by_family["dense"], by_family["moe4"]):
        assert moe["name"] == f"moe4_{moe['size']}" and dense["name"] == f"dense_{dense['size']}"
        assert moe["size"] == dense["size"] and moe["flops"] == dense["flops"]
        assert {k: v for k, v in moe["shape"].items() if k != "moe"} == dense["shape"]
        assert "moe" not in dense["shape"] and moe["shape"]["moe"]["experts"] == 4
    for p in doc["points"]:
        cfg = load_config(out / "points" / p["name"] / "config.yaml")
        if p["family"] == "dense":
            assert cfg.model.moe is None
        else:
            assert (cfg.model.moe.experts, cfg.model.moe.top_k) == (4, 1)
            assert cfg.model.moe.expert_d_ff == cfg.model.d_ff  # MoEConfig's default: the shape's own width
        per_token = flops_per_token(cfg.model, "6N")
        assert cfg.train.tokens == p["n_tokens"] == int(p["flops"] // per_token)
        assert p["n_params_active"] == round(per_token / 6)
    assert (out / "points.txt").read_text().split() == [p["name"] for p in doc["points"]]
    assert prepare(_args(base, out, family=FAMILIES, budgets=[6e10, 1.2e11])) == doc  # a rerun resumes it
    with pytest.raises(UserError, match="holds another sweep"):
        prepare(_args(base, out, family=[["dense"], ["moe4", "experts=8"]], budgets=[6e10, 1.2e11]))


def test_a_moe_point_spends_its_budget_on_its_active_parameters(base, tmp_path):
    """Once llm/shape.py counts experts: a MoE point's N is its active parameters, so its D is C / 6N_active."""
    from llm.shape import count_active_params
    out = tmp_path / "s"
    doc = prepare(_args(base, out, family=FAMILIES, budgets=[6e10, 1.2e11]))
    for p in doc["points"]:
        cfg = load_config(out / "points" / p["name"] / "config.yaml")
        assert p["n_params_active"] == count_active_params(cfg.model)


@pytest.mark.parametrize("families, message", [
    ([["moe4", "experts=4"]], "alone: give two or more families"),
    ([["dense"], ["dense", "experts=4"]], "--family dense is given twice"),
    ([["dense"], ["moe", "experts"]], "write model.moe's settings as KEY=VALUE"),
    ([["dense"], ["m/e"]], "a name of letters, digits"),
    ([["dense"], ["moe", "expert=4"]], r"unknown key 'model.moe.expert'; did you mean 'model.moe.experts'"),
    ([["dense"], ["moe", "experts=4", "top_k=5"]], "--family moe: model.moe.top_k=5 must be between 1 and")])
def test_a_wrong_family_is_named(base, tmp_path, families, message):
    with pytest.raises(UserError, match=message):
        prepare(_args(base, tmp_path / "s", family=families))
