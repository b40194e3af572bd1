"""llm/train/checkpoint_reader.py: open_checkpoint tells every kind apart (step, imported, stage, hf, a step of
pipeline layer files) and gives the same weights, config and tokenizer from each; a directory of none is named."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from llm.config import ConfigError, ModelConfig
from llm.model import Transformer
from llm.train.checkpoint_reader import open_checkpoint

MODEL = {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128, "vocab_size": 512, "seq_len": 64}


@pytest.fixture(scope="module")
def step(tiny_data, tmp_path_factory):
    """A step directory as launch/pretrain.py writes one: model.pt, config.yaml, its own tokenizer copy."""
    d = tmp_path_factory.mktemp("reader") / "step_00000003"
    d.mkdir()
    torch.save(Transformer(ModelConfig(**MODEL), seed=1).state_dict(), d / "model.pt")
    (d / "config.yaml").write_text(yaml.safe_dump({"model": MODEL, "data": {"tokenizer": "moved/tokenizer.model"}}))
    shutil.copyfile(tiny_data["tokenizer"], d / "tokenizer.model")
    (d / "trainer_state.json").write_text(json.dumps({"step": 3, "tokens": 0, "layout": {"backend": "local"}}))
    return d


def _same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_a_step_directory(step):
    ckpt = open_checkpoint(step)
    assert (ckpt.kind, ckpt.weights, ckpt.config_file, ckpt.tokenizer) == \
        ("step", step / "model.pt", step / "config.yaml", step / "tokenizer.model")
    assert ckpt.model == ModelConfig(**MODEL)
    assert _same_weights(ckpt.build_model().state_dict(), torch.load(step / "model.pt"))


def test_a_stage_directory_and_a_reward_model_stage(step, tmp_path):
    stage = tmp_path / "sft"
    shutil.copytree(step, stage)
    (stage / "config.yaml").unlink()
    (stage / "stage.json").write_text(json.dumps({"kind": "lm", "stage": "sft", "model": MODEL}))
    ckpt = open_checkpoint(stage)
    assert (ckpt.kind, ckpt.tokenizer, ckpt.stage["stage"]) == ("stage", stage / "tokenizer.model", "sft")
    assert _same_weights(ckpt.state_dict(), torch.load(step / "model.pt"))
    (stage / "stage.json").write_text(json.dumps({"kind": "reward", "stage": "rm", "model": MODEL}))
    with pytest.raises(ConfigError, match=r"is a 'reward' stage \(rm\), not a language model"):
        open_checkpoint(stage)
    rm = open_checkpoint(stage, language_model=False)  # llm/align/handoff.py's reward models
    assert (rm.kind, rm.language_model) == ("stage", False) and set(rm.state_dict()) == set(ckpt.state_dict())
    with pytest.raises(ConfigError, match=r"is a reward model \(rm\), not a language model"):
        rm.build_model()


def test_hf_and_imported_directories(step, tmp_path):
    from llm.hf.export import export_hf
    from llm.hf.import_ import import_hf

    hf = export_hf(step, tmp_path / "hf")
    ckpt = open_checkpoint(hf)
    assert (ckpt.kind, ckpt.weights, ckpt.tokenizer, ckpt.config_file) == ("hf", None, hf, hf / "config.json")
    assert _same_weights(ckpt.build_model().state_dict(), torch.load(step / "model.pt"))
    imported = open_checkpoint(import_hf(hf, tmp_path / "imported"))
    assert (imported.kind, imported.tokenizer.name) == ("imported", "tokenizer.json")
    assert _same_weights(imported.state_dict(), torch.load(step / "model.pt"))
    (hf / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        open_checkpoint(hf).tokenizer


def test_a_step_of_pipeline_layer_files_is_named_for_consolidation(step, tmp_path):
    d = tmp_path / "step_00000005"
    (d / "deepspeed").mkdir(parents=True)
    shutil.copyfile(step / "config.yaml", d / "config.yaml")
    (d / "deepspeed" / "layer_00-model_00-model_states.pt").write_bytes(b"")
    ckpt = open_checkpoint(d)
    assert (ckpt.kind, ckpt.weights, ckpt.pipeline_dir) == ("step", None, d / "deepspeed")
    with pytest.raises(ConfigError, match="only DeepSpeed pipeline layer files .* launch/consolidate.py"):
        ckpt.state_dict()
    (d / "deepspeed" / "layer_00-model_00-model_states.pt").unlink()
    with pytest.raises(ConfigError, match="holds neither model.pt nor DeepSpeed pipeline layer files"):
        open_checkpoint(d)


def test_what_is_no_checkpoint_or_does_not_fit(step, tmp_path):
    with pytest.raises(ConfigError, match="nowhere is not a checkpoint directory"):
        open_checkpoint(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"is not a checkpoint directory \(no model.pt\)"):
        open_checkpoint(tmp_path)
    other = Transformer(ModelConfig(**{**MODEL, "d_ff": 256})).state_dict()
    with pytest.raises(ConfigError, match=r"weights do not fit its config.yaml \(.*size mismatch"):
        open_checkpoint(step).build_model(other)
    bad = tmp_path / "step_00000001"
    shutil.copytree(step, bad)
    torch.save(other, bad / "model.pt")
    with pytest.raises(ConfigError, match=r"model.pt: tensor layers.0.*d_ff"):
        open_checkpoint(bad).state_dict()
