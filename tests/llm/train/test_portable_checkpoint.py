"""Step directories carry their tokenizer: export, evaluation, alignment, consolidation and resume read a step
directory from any directory, after the run's data (and its tokenizer) moved."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from launch import cli
from llm.config import ConfigError, load_config
from llm.train import checkpoint as ckpt
from llm.train.debug import run_debug
from llm.train.resume import check_same_run
from tests.conftest import tiny_config_dict


@pytest.fixture(scope="module")
def moved_run(tiny_data, tmp_path_factory):
    """A 2-step debug run launched from `root` with relative paths (data/..., run); then data/ is renamed. Returns
    (root, the step directory, the moved tokenizer)."""
    root = tmp_path_factory.mktemp("portable")
    (root / "data").mkdir()
    for suffix in (".bin", ".idx"):
        shutil.copyfile(tiny_data["prefix"] + suffix, root / "data" / f"data{suffix}")
    shutil.copyfile(tiny_data["tokenizer"], root / "data" / "tokenizer.model")
    rel = {"prefix": "data/data", "tokenizer": "data/tokenizer.model"}
    raw = tiny_config_dict(rel, Path("run"), train={"max_steps": 2, "eval_every": 0})
    (root / "run.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_debug(load_config("run.yaml"), device=torch.device("cpu"))
    (root / "data").rename(root / "data_moved")
    (root / "elsewhere").mkdir()
    return root, ckpt.step_dir(root / "run" / "checkpoints", 2), root / "data_moved" / "tokenizer.model"


def test_step_directory_works_after_the_data_moved(moved_run, tmp_path, monkeypatch, capsys):
    from data_pipeline.tokenizer import Tokenizer
    from launch.consolidate import main as consolidate_main
    from launch.export_hf import main as export_main
    from llm.align.base_stage import load_pretrained
    from llm.eval.checkpoint import load_eval_model

    root, step, moved = moved_run
    monkeypatch.chdir(root / "elsewhere")
    assert (step / "tokenizer.model").read_bytes() == moved.read_bytes()
    assert yaml.safe_load((step / "config.yaml").read_text())["data"]["tokenizer"] == "data/tokenizer.model"

    assert cli.call(export_main, [str(step), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    ev = load_eval_model(step)
    assert ev.tokenizer.fingerprint() == Tokenizer(moved).fingerprint()
    model, tok, tok_path, cfg = load_pretrained(step)
    assert tok_path == step / "tokenizer.model" and cfg.n_layers == 2
    assert cli.call(consolidate_main, [str(step), "--output", str(tmp_path / "model.pt")]) == 0
    assert f"its tokenizer is {step / 'tokenizer.model'}" in capsys.readouterr().out


def test_resume_compares_the_tokenizer_by_content(moved_run, tmp_path, monkeypatch):
    root, step, moved = moved_run
    monkeypatch.chdir(root / "elsewhere")
    saved = yaml.safe_load((step / "config.yaml").read_text())
    saved["data"]["tokenizer"] = str(moved)  # another path, the same file: the same run
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump(saved))
    check_same_run(step, load_config(tmp_path / "moved.yaml"))
    other = tmp_path / "data" / "tokenizer.model"  # the saved relative path, from here, holding another tokenizer
    other.parent.mkdir()
    other.write_bytes(moved.read_bytes()[:-1] + b"x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="data/tokenizer.model now holds another tokenizer than the checkpoint's"):
        check_same_run(step, load_config(root / "run.yaml"))


def test_tokenizer_gone_mid_run_is_carried_from_the_last_checkpoint(moved_run, tmp_path):
    _, step, _ = moved_run
    root = tmp_path / "checkpoints"
    shutil.copytree(step, ckpt.step_dir(root, 2))
    later = ckpt.temp_dir_for(ckpt.step_dir(root, 4))
    later.mkdir()
    assert ckpt.save_tokenizer(later, "gone/tokenizer.model", root) == later / "tokenizer.model"
    assert (later / "tokenizer.model").read_bytes() == (step / "tokenizer.model").read_bytes()
    with pytest.raises(ConfigError, match="data.tokenizer=gone/tokenizer.model is gone"):
        ckpt.save_tokenizer(later, "gone/tokenizer.model", tmp_path / "empty")


def test_unset_tokenizer_is_named_not_dot(moved_run, tmp_path, capsys):
    from launch.export_hf import main as export_main
    _, step, _ = moved_run
    bare = tmp_path / "step_00000002"
    bare.mkdir()
    shutil.copyfile(step / "model.pt", bare / "model.pt")
    raw = yaml.safe_load((step / "config.yaml").read_text())
    raw["data"]["tokenizer"] = None
    (bare / "config.yaml").write_text(yaml.safe_dump(raw))
    assert cli.call(export_main, [str(bare), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "leaves data.tokenizer unset" in err and f"copy the tokenizer the data was prepared with into {bare}" in err
    assert "tokenizer . does not exist" not in err
