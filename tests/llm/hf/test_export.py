"""launch/export_hf.py on real checkpoints (debug mode and DeepSpeed ZeRO-3 over 2 ranks), with transformers as
the oracle: logits, loss and greedy generation of the exported model against ours on the same checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from launch import cli
from launch.export_hf import main as export_main
from llm.train.checkpoint_reader import open_checkpoint
from llm.model import Transformer
from llm.train.checkpoint import latest_checkpoint, load_model_weights
from tests.conftest import tiny_config_dict
from tests.llm.hf.helpers import LOGITS_ATOL, compare_with_hf
from tests.parallel.launcher_utils import run_deepspeed, run_single, write_config


def _ours(step_dir):
    src = open_checkpoint(step_dir)
    model = Transformer(src.model)
    load_model_weights(model, step_dir)
    return model, src.model


def _check_export(step_dir, out, **kw):
    from transformers import AutoModelForCausalLM
    assert cli.call(export_main, [str(step_dir), str(out), *kw.get("args", [])]) == 0
    ours, cfg = _ours(step_dir)
    hf = AutoModelForCausalLM.from_pretrained(out)
    diff = compare_with_hf(ours, hf, cfg.vocab_size, cfg.seq_len)
    assert diff["logits"] < LOGITS_ATOL and diff["loss"] < 1e-5, diff
    assert diff["generate_equal"] and diff["generated"] == cfg.seq_len - 4, diff
    config = json.loads((out / "config.json").read_text())
    assert (config["rms_norm_eps"], config["max_position_embeddings"], config["head_dim"]) == \
        (cfg.norm_eps, cfg.seq_len, cfg.head_dim)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (2, 3, 0)
    assert (out / "generation_config.json").is_file()
    return diff


@pytest.fixture(scope="module")
def debug_checkpoint(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("debug")
    cfg = tiny_config_dict(tiny_data, tmp / "run", model={"tie_embeddings": True, "rope_theta": 5e5, "norm_eps": 1e-6},
                           train={"max_steps": 2, "eval_every": 0})
    run_single(write_config(tmp / "run.yaml", cfg), tmp / "run")
    return latest_checkpoint(tmp / "run" / "checkpoints")


def test_debug_checkpoint_exports_to_an_equal_hf_model(debug_checkpoint, tmp_path):
    _check_export(debug_checkpoint, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["tie_word_embeddings"] and config["rope_parameters"]["rope_theta"] == 5e5
    assert config["num_key_value_heads"] == 2 and config["rms_norm_eps"] == 1e-6


def test_sharded_export_and_tokenizer(debug_checkpoint, tiny_data, tmp_path):
    from transformers import AutoTokenizer

    from data_pipeline.tokenizer import Tokenizer
    _check_export(debug_checkpoint, tmp_path / "hf", args=["--max-shard-size", "40KB"])
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    text = " def f(x):\n    return x  # </s>\n"
    assert (AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"]
            == Tokenizer(tiny_data["tokenizer"]).encode(text))


def test_zero3_checkpoint_exports_to_an_equal_hf_model(tiny_data, tmp_path):
    cfg = tiny_config_dict(tiny_data, tmp_path / "run", train={"max_steps": 2, "eval_every": 0})
    run_deepspeed(write_config(tmp_path / "run.yaml", cfg), tmp_path / "run", 2, ["parallel.zero_stage=3"])
    step = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert json.loads((step / "trainer_state.json").read_text())["layout"]["backend"] != "local"
    _check_export(step, tmp_path / "hf")


def test_user_mistakes_exit_2_with_one_line(debug_checkpoint, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert cli.call(export_main, [str(tmp_path), str(tmp_path / "a")]) == 2
    assert cli.call(export_main, [str(debug_checkpoint), str(tmp_path / "full")]) == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes((debug_checkpoint / "model.pt").read_bytes())
    raw = yaml.safe_load((debug_checkpoint / "config.yaml").read_text())
    raw["data"]["tokenizer"] = str(tmp_path / "gone.model")
    (broken / "config.yaml").write_text(yaml.safe_dump(raw))
    assert cli.call(export_main, [str(broken), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("config error: ") for line in err), err
    assert "not a checkpoint" in err[0] and "--force" in err[1] and "gone.model" in err[2]
    # --force replaces only an earlier export (typed_yaml/output_dir.py), never a folder of someone else's.
    assert cli.call(export_main, [str(debug_checkpoint), str(tmp_path / "full"), "--force"]) == 2
    assert (tmp_path / "full" / "x").exists() and "not an output of export_hf.py" in capsys.readouterr().err
    assert cli.call(export_main, [str(debug_checkpoint), str(tmp_path / "new")]) == 0
    assert cli.call(export_main, [str(debug_checkpoint), str(tmp_path / "new"), "--force"]) == 0


def test_alignment_stage_directory_exports(debug_checkpoint, tiny_data, tmp_path):
    from llm.align.handoff import save_stage
    model, _ = _ours(debug_checkpoint)
    stage = save_stage(tmp_path / "sft", "sft", model, tiny_data["tokenizer"])
    _check_export(stage, tmp_path / "hf")
    assert torch.equal(torch.load(stage / "model.pt", weights_only=True)["norm.weight"], model.norm.weight)
