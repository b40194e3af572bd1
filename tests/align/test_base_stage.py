"""The chain from a model pretrained outside it: `base.path` naming a launch/pretrain.py step directory.

The base stage's own pretraining run (<out_dir>/base_pretrain, llm/train's debug loop, the code path of
launch/pretrain.py in debug mode) leaves such a step directory; a second chain started from it imports it and must
hold the same model, tokenizer and evaluation as the base made inside the chain.
"""
import json
import shutil

import pytest
import torch

from llm.align import handoff
from llm.align.config import load_align_config
from tests.conftest import ROOT

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

RECIPE = ROOT / "configs" / "align" / "default.yaml"


@pytest.fixture(scope="module")
def made_inside(tmp_path_factory):
    from llm.align.base_stage import run_base
    out = tmp_path_factory.mktemp("inside")
    torch.set_num_threads(1)
    run_base(load_align_config(RECIPE, [f"out_dir={out}", "base.steps=20"]))
    step = next((out / "base_pretrain" / "checkpoints").glob("step_*"))
    return out, step


def test_chain_from_a_pretrain_step_directory(made_inside, tmp_path, capsys):
    from llm.align.chain import run_chain
    inside, step = made_inside
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", f"base.path={step}", "stages=[base,sft]", "sft.steps=5",
                                     "sft.optim.warmup_steps=0", "sft.eval_every=0"])
    assert cfg.stage_dir("base") == str(tmp_path / "base")  # imported there, not written into the pretrain run
    report = run_chain(cfg)
    lines = capsys.readouterr().out.splitlines()
    base = report["stages"]["base"]
    assert base["imported_from"] == str(step) and any("base: imported" in s for s in lines)
    ref = handoff.read_info(inside / "base")
    assert base["checker_accuracy"] == ref.metrics["checker_accuracy"]
    assert handoff.read_info(tmp_path / "base").tokenizer_fingerprint == ref.tokenizer_fingerprint
    a = torch.load(tmp_path / "base" / "model.pt", weights_only=True)
    b = torch.load(step / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert handoff.is_complete(tmp_path / "sft")
    assert json.loads((tmp_path / "chain_report.json").read_text())["summary"]["sft.checker_accuracy"] is not None
    # Run again: the imported base is complete and skipped.
    assert run_chain(cfg)["skipped"] == ["base", "sft"]


def test_a_stage_checkpoint_as_base_path_is_used_as_it_is(made_inside, tmp_path):
    inside, _ = made_inside
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", f"base.path={inside / 'base'}"])
    assert cfg.stage_dir("base") == str(inside / "base")


def test_a_pretrain_directory_missing_its_tokenizer_is_named(made_inside, tmp_path):
    from llm.align.base_stage import run_base
    inside, step = made_inside
    copy = tmp_path / "step_copy"
    shutil.copytree(step, copy)
    (copy / "tokenizer.model").unlink()  # a step directory written before they carried their tokenizer
    text = (copy / "config.yaml").read_text().replace(str(inside / "base_pretrain" / "tokenizer.model"),
                                                       str(tmp_path / "gone.model"))
    (copy / "config.yaml").write_text(text)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path / 'out'}", f"base.path={copy}"])
    with pytest.raises(handoff.HandoffError, match="gone.model.*is not there"):
        run_base(cfg)
    (tmp_path / "empty").mkdir()
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path / 'out'}", f"base.path={tmp_path / 'empty'}"])
    with pytest.raises(handoff.HandoffError,
                       match="neither a stage checkpoint .*, a pretraining step directory .* nor a Hugging Face"):
        run_base(cfg)


def test_users_data_only_chain_skips_unconfigured_stages(made_inside, tmp_path, capsys):
    """task.name: none — no bundled data: SFT on the user's file, GRPO on prompts with a reference-answer field
    scored by the user's reward function; the RM (no rm.data) is skipped with a line saying so."""
    from llm.align.chain import run_chain
    from llm.config import ConfigError
    _, step = made_inside
    prompts = ["5183", "209", "7461", "352", "8016", "49", "1372", "560"]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": p, "completion": "".join(sorted(p))}) + "\n" for p in prompts))
    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"prompt": p, "answer": "".join(sorted(p))}) + "\n" for p in prompts))
    reward = tmp_path / "reward.py"
    reward.write_text("def exact(prompts, completions, answer, **fields):\n"
                      "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n")
    overrides = [f"out_dir={tmp_path / 'out'}", "task.name=none", f"base.path={step}", "stages=[base,sft,rm,grpo_rloo]",
                 f"sft.data={sft}", "sft.steps=4", "sft.batch_size=4", "sft.optim.warmup_steps=0",
                 f"grpo_rloo.prompts={rl}", f"eval.prompts={rl}", f"grpo_rloo.reward={reward}:exact",
                 f"eval.reward={reward}:exact",
                 "grpo_rloo.iterations=2", "grpo_rloo.prompts_per_iteration=2", "grpo_rloo.group_size=4",
                 "grpo_rloo.mini_batch=8"]
    report = run_chain(load_align_config(RECIPE, overrides))
    lines = capsys.readouterr().out.splitlines()
    assert report["not_run"] == {"rm": "no rm.data configured (task.name: none)"}
    assert "== rm: no rm.data configured (task.name: none), skipped" in lines
    assert not (tmp_path / "out" / "data").exists()  # no bundled task data written
    assert report["stages"]["sft"]["eval_loss"] is None  # no sft.eval_data
    for stage in ("base", "sft", "grpo_rloo"):
        assert 0.0 <= report["stages"][stage]["eval_reward"] <= 1.0, stage
    assert report["stages"]["grpo_rloo"]["last_train_row"]["step"] == 2 and "kl" in report["stages"]["grpo_rloo"]
    with pytest.raises(ConfigError, match="no text to pretrain a base on; set base.path"):
        load_align_config(RECIPE, ["task.name=none"])


def test_bundled_from_pretrain_recipe_names_a_missing_checkpoint(tmp_path):
    from llm.align.chain import run_chain
    cfg = load_align_config(ROOT / "configs" / "align" / "from_pretrain.yaml",
                            [f"out_dir={tmp_path}", f"base.path={tmp_path}/runs/debug/checkpoints/step_00000200"])
    assert cfg.stages == ["base", "sft", "grpo_rloo"] and cfg.grpo_rloo.algorithm == "grpo"
    with pytest.raises(handoff.HandoffError, match="step_00000200 is neither a stage checkpoint"):
        run_chain(cfg)
