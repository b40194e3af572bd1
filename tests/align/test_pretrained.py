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

RECIPE = ROOT / "configs" / "align" / "default.yaml"


@pytest.fixture(scope="module")
def made_inside(tmp_path_factory):
    from llm.align.base import run_base
    out = tmp_path_factory.mktemp("inside")
    torch.set_num_threads(1)
    run_base(load_align_config(RECIPE, [f"out_dir={out}", "base.steps=20"]), log=lambda s: None)
    step = next((out / "base_pretrain" / "checkpoints").glob("step_*"))
    return out, step


def test_chain_from_a_pretrain_step_directory(made_inside, tmp_path):
    from llm.align.chain import run_chain
    inside, step = made_inside
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", f"base.path={step}", "stages=[base,sft]", "sft.steps=5",
                                     "sft.optim.warmup_steps=0", "sft.eval_every=0"])
    assert cfg.stage_dir("base") == str(tmp_path / "base")  # imported there, not written into the pretrain run
    lines = []
    report = run_chain(cfg, log=lines.append)
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
    assert run_chain(cfg, log=lambda s: None)["skipped"] == ["base", "sft"]


def test_a_stage_checkpoint_as_base_path_is_used_as_it_is(made_inside, tmp_path):
    inside, _ = made_inside
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", f"base.path={inside / 'base'}"])
    assert cfg.stage_dir("base") == str(inside / "base")


def test_a_pretrain_directory_missing_its_tokenizer_is_named(made_inside, tmp_path):
    from llm.align.base import run_base
    inside, step = made_inside
    copy = tmp_path / "step_copy"
    shutil.copytree(step, copy)
    text = (copy / "config.yaml").read_text().replace(str(inside / "base_pretrain" / "tokenizer.model"),
                                                       str(tmp_path / "gone.model"))
    (copy / "config.yaml").write_text(text)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path / 'out'}", f"base.path={copy}"])
    with pytest.raises(handoff.HandoffError, match="gone.model.*is not there"):
        run_base(cfg, log=lambda s: None)
    (tmp_path / "empty").mkdir()
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path / 'out'}", f"base.path={tmp_path / 'empty'}"])
    with pytest.raises(handoff.HandoffError, match="neither a stage checkpoint .* nor a pretraining step"):
        run_base(cfg, log=lambda s: None)
