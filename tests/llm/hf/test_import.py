"""launch/import_hf.py and checkpoint.init_from=HF_DIR on random-init models that transformers builds here:
logits equal to transformers', import → export reproduces the safetensors bitwise, unsupported fields refused."""
from __future__ import annotations

import json

import pytest
import torch

from launch import cli
from data_pipeline.hf_tokenizer import save_hf_tokenizer
from launch.export_hf import main as export_main
from launch.import_hf import main as import_main
from llm.hf.load import read_hf_config
from llm.model import Transformer
from llm.train.checkpoint import load_model_weights, read_model_weights
from tests.conftest import tiny_config_dict
from tests.llm.hf.helpers import LOGITS_ATOL, compare_with_hf
from tests.parallel.launcher_utils import read_metrics, run_single, write_config

SHAPES = {
    "gqa": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                rope_theta=10000.0),
    "tied_wide_heads": dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                            tie_word_embeddings=True, rope_theta=5e5),
}


def make_hf_model(path, tokenizer, dtype=torch.float32, rope=None, **shape):
    """A random-init LlamaForCausalLM saved with our tokenizer's files (vocab 512, seq_len 32); `rope`: the
    rope_parameters of a scaled RoPE (rope_type, factor, ...)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    theta = shape.pop("rope_theta")
    config = LlamaConfig(vocab_size=512, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=32,
                         rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", **(rope or {}), "rope_theta": theta},
                         bos_token_id=2, eos_token_id=3, pad_token_id=0, **shape)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(dtype)
    # Norm weights start at 1; perturb them so a swapped norm would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    save_hf_tokenizer(tokenizer, path)
    return model


def _safetensors(folder) -> dict:
    from safetensors import safe_open
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                out[k] = (t.dtype, tuple(t.shape), t.contiguous().view(torch.uint8).numpy().tobytes())
    return out


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_imported_model_equals_hf_and_exports_back_bitwise(shape, tiny_data, tmp_path):
    hf = make_hf_model(tmp_path / "hf", tiny_data["tokenizer"], **dict(SHAPES[shape]))
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    step = tmp_path / "ours" / "step_00000000"
    cfg = read_hf_config(tmp_path / "hf")
    ours = Transformer(cfg)
    load_model_weights(ours, step)
    diff = compare_with_hf(ours, hf, cfg.vocab_size, cfg.seq_len)
    assert diff["logits"] < LOGITS_ATOL and diff["loss"] < 1e-5 and diff["generate_equal"], diff
    direct = read_model_weights(tmp_path / "hf")  # checkpoint.init_from=HF_DIR reads this
    assert all(torch.equal(direct[k], v) for k, v in ours.state_dict().items())
    assert cli.call(export_main, [str(step), str(tmp_path / "back")]) == 0
    original, back = _safetensors(tmp_path / "hf"), _safetensors(tmp_path / "back")
    assert sorted(original) == sorted(back) and all(original[k] == back[k] for k in original)


SCALED = {
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "beta_fast": 32.0,
             "beta_slow": 1.0, "truncate": True},
}


@pytest.mark.parametrize("scheme", sorted(SCALED))
def test_scaled_rope_imports_and_exports_back(scheme, tiny_data, tmp_path):
    """A Llama with llama3 or YaRN scaling (8 → 32 positions): imported, the same logits as transformers'; exported
    back, the same rope_parameters and again the same logits. The older rope_scaling form imports too."""
    from transformers import AutoModelForCausalLM
    hf = make_hf_model(tmp_path / "hf", tiny_data["tokenizer"], rope=SCALED[scheme], **dict(SHAPES["gqa"]))
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    cfg = read_hf_config(tmp_path / "hf")
    assert (cfg.rope_scaling.type, cfg.rope_scaling.original_seq_len, cfg.seq_len) == (scheme, 8, 32)
    ours = Transformer(cfg)
    load_model_weights(ours, tmp_path / "ours" / "step_00000000")
    diff = compare_with_hf(ours, hf, cfg.vocab_size, cfg.seq_len)
    assert diff["logits"] < LOGITS_ATOL and diff["loss"] < 1e-5 and diff["generate_equal"], diff
    assert cli.call(export_main, [str(tmp_path / "ours" / "step_00000000"), str(tmp_path / "back")]) == 0
    back = json.loads((tmp_path / "back" / "config.json").read_text())["rope_parameters"]
    assert back == {**SCALED[scheme], "rope_theta": 10000.0}
    diff = compare_with_hf(ours, AutoModelForCausalLM.from_pretrained(tmp_path / "back"), cfg.vocab_size, cfg.seq_len)
    assert diff["logits"] < LOGITS_ATOL and diff["generate_equal"], diff
    # transformers < 5 wrote rope_theta at the top and the scaling as rope_scaling {type, ...}.
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    old = {k: v for k, v in SCALED[scheme].items() if k != "rope_type"}
    config.update(rope_parameters=None, rope_theta=10000.0, rope_scaling={"type": scheme, **old})
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert read_hf_config(tmp_path / "hf") == cfg


def test_bf16_round_trip_is_bitwise(tiny_data, tmp_path):
    make_hf_model(tmp_path / "hf", tiny_data["tokenizer"], dtype=torch.bfloat16, **dict(SHAPES["gqa"]))
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert torch.load(tmp_path / "ours/step_00000000/model.pt",
                      weights_only=True)["norm.weight"].dtype == torch.bfloat16
    assert cli.call(export_main, [str(tmp_path / "ours/step_00000000"), str(tmp_path / "back")]) == 0
    assert _safetensors(tmp_path / "hf") == _safetensors(tmp_path / "back")


@pytest.mark.parametrize("field, value", [
    ("attention_bias", True), ("mlp_bias", True), ("hidden_act", "gelu"), ("model_type", "qwen2_moe"),
    ("sliding_window", 4096), ("num_local_experts", 8),
    ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0}),
    ("rope_parameters", {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0], "long_factor": [2.0]}),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8}),  # no low/high
])
def test_unsupported_architectures_are_refused_naming_the_field(field, value, tiny_data, tmp_path, capsys):
    make_hf_model(tmp_path / "hf", tiny_data["tokenizer"], **dict(SHAPES["gqa"]))
    config = json.loads((tmp_path / "hf/config.json").read_text())
    config[field] = value
    if field == "sliding_window":
        config["model_type"] = "mistral"
    (tmp_path / "hf/config.json").write_text(json.dumps(config))
    capsys.readouterr()  # transformers' progress bars of make_hf_model
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0], err
    assert not (tmp_path / "ours").exists()


def test_a_tensor_we_have_no_place_for_is_refused(tiny_data, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    make_hf_model(tmp_path / "hf", tiny_data["tokenizer"], **dict(SHAPES["gqa"]))
    state = load_file(tmp_path / "hf/model.safetensors")
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(state, tmp_path / "hf/model.safetensors", metadata={"format": "pt"})
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 2
    assert "q_proj.bias" in capsys.readouterr().err


def test_continued_pretraining_from_an_hf_directory(tiny_data, tmp_path):
    """checkpoint.init_from=HF_DIR in a real run, and from the imported checkpoint: the same first loss, not a
    fresh init's."""
    make_hf_model(tmp_path / "hf", tiny_data["tokenizer"], **dict(SHAPES["gqa"]))
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    imported = (tmp_path / "ours/step_00000000/config.yaml").read_text()
    assert "tokenizer.json" in imported and "init_from" in imported
    losses = {}
    for name, init in (("hf", tmp_path / "hf"), ("imported", tmp_path / "ours/step_00000000"), ("fresh", None)):
        cfg = tiny_config_dict(tiny_data, tmp_path / name, train={"max_steps": 2, "eval_every": 0},
                               model={"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 96,
                                      "norm_eps": 1e-6},
                               checkpoint={"init_from": init and str(init)})
        cfg["data"]["tokenizer"] = str(tmp_path / "ours/step_00000000/tokenizer.json")
        run_single(write_config(tmp_path / f"{name}.yaml", cfg), tmp_path / name)
        losses[name] = [r["loss"] for r in read_metrics(tmp_path / name) if "loss" in r][0]
    assert losses["hf"] == losses["imported"] != losses["fresh"], losses
