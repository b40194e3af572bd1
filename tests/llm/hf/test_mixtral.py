"""MoE models to and from transformers' MixtralForCausalLM: logits equal within LOGITS_ATOL (fp32), greedy generation
identical, import → export → import bit-identical, and the MoE configs Mixtral cannot express refused in one line."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import yaml

from data_pipeline.hf_tokenizer import save_hf_tokenizer
from launch import cli
from launch.export_hf import main as export_main
from launch.import_hf import main as import_main
from llm.config import ConfigError, ModelConfig
from llm.config.model import MoEConfig
from llm.hf.convert import hf_config_dict, model_config_from_hf
from llm.model import Transformer
from llm.train.checkpoint import read_model_weights
from tests.llm.hf.helpers import LOGITS_ATOL, compare_with_hf
from tests.llm.hf.test_import import _safetensors

pytestmark = pytest.mark.unit

# 4 experts, top-2, 2 layers, grouped-query attention (4 query heads, 2 key/value heads); vocab 512 (the tokenizer's).
MODEL = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=48, vocab_size=512, seq_len=32, norm_eps=1e-6,
             rope_theta=1e6)
MOE = dict(experts=4, top_k=2, expert_d_ff=40, aux_loss_coef=0.0)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Norm weights start at 1 and routers near uniform: perturb both, so a swapped norm or a routing difference
    shows in the logits."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            if "router" in name or name.endswith("mlp.gate.weight"):
                p.mul_(50.0)
    return model


def write_step(path, model: Transformer, tokenizer) -> None:
    """A step directory as launch/pretrain.py writes one: model.pt, config.yaml, its own tokenizer copy."""
    path.mkdir(parents=True)
    torch.save(model.state_dict(), path / "model.pt")
    cfg = dataclasses.asdict(model.cfg)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": cfg, "data": {"tokenizer": "tokenizer.model"}}))
    shutil.copyfile(tokenizer, path / "tokenizer.model")
    (path / "trainer_state.json").write_text(json.dumps({"step": 1, "tokens": 0, "layout": {"backend": "local"}}))


@pytest.mark.parametrize("tied", [False, True])
def test_export_equals_mixtral_and_loads_with_auto_model(tied, tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM, MixtralForCausalLM
    cfg = ModelConfig(**MODEL, tie_embeddings=tied, moe=MoEConfig(**MOE))
    ours = _perturbed(Transformer(cfg, seed=3))
    write_step(tmp_path / "step", ours, tiny_data["tokenizer"])
    assert cli.call(export_main, [str(tmp_path / "step"), str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert type(hf) is MixtralForCausalLM
    diff = compare_with_hf(ours, hf, cfg.vocab_size, cfg.seq_len)
    assert diff["logits"] < LOGITS_ATOL and diff["loss"] < 1e-5, diff
    assert diff["generate_equal"] and diff["generated"] == cfg.seq_len - 4, diff
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["model_type"], config["num_local_experts"], config["num_experts_per_tok"],
            config["intermediate_size"], config["tie_word_embeddings"], config["output_router_logits"],
            config["router_jitter_noise"], config["sliding_window"]) == ("mixtral", 4, 2, 40, tied, False, 0.0, None)
    # gate_up_proj holds gate first, then up: the order MixtralExperts.forward splits it in.
    fused = hf.model.layers[1].mlp.experts.gate_up_proj
    assert torch.equal(fused[:, :40], ours.layers[1].mlp.experts.w_gate)
    assert torch.equal(fused[:, 40:], ours.layers[1].mlp.experts.w_up)


def make_mixtral(path, tokenizer, dtype=torch.float32, **extra):
    """A random-init MixtralForCausalLM saved with our tokenizer's files (4 experts, top-2, GQA, vocab 512)."""
    from transformers import MixtralConfig, MixtralForCausalLM
    config = MixtralConfig(vocab_size=512, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                           num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-6,
                           router_aux_loss_coef=0.0, bos_token_id=2, eos_token_id=3, pad_token_id=0, **extra)
    torch.manual_seed(0)
    model = _perturbed(MixtralForCausalLM(config)).to(dtype)
    model.save_pretrained(path)
    save_hf_tokenizer(tokenizer, path)
    return model


def test_import_equals_mixtral_and_exports_back_bitwise(tiny_data, tmp_path):
    hf = make_mixtral(tmp_path / "hf", tiny_data["tokenizer"])
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    step = tmp_path / "ours" / "step_00000000"
    saved = yaml.safe_load((step / "config.yaml").read_text())["model"]
    assert saved["moe"] == {"experts": 4, "top_k": 2, "expert_d_ff": 40, "shared_experts": 0, "every_k_layers": 1,
                            "aux_loss_coef": 0.0, "z_loss_coef": 0.0}
    cfg = ModelConfig(**{**saved, "moe": MoEConfig(**saved["moe"])})
    ours = Transformer(cfg)
    first = read_model_weights(step)
    ours.load_state_dict(first)
    diff = compare_with_hf(ours, hf, cfg.vocab_size, cfg.seq_len)
    assert diff["logits"] < LOGITS_ATOL and diff["loss"] < 1e-5, diff
    assert diff["generate_equal"], diff
    # import(export(x)) holds bit-identical weights, and export writes Mixtral's files as transformers does.
    assert cli.call(export_main, [str(step), str(tmp_path / "back")]) == 0
    assert _safetensors(tmp_path / "back") == _safetensors(tmp_path / "hf")
    assert cli.call(import_main, [str(tmp_path / "back"), str(tmp_path / "again")]) == 0
    again = read_model_weights(tmp_path / "again" / "step_00000000")
    assert set(again) == set(first) and all(torch.equal(again[k], first[k]) for k in first)


def test_bf16_mixtral_round_trip_is_bitwise(tiny_data, tmp_path):
    make_mixtral(tmp_path / "hf", tiny_data["tokenizer"], dtype=torch.bfloat16, tie_word_embeddings=True)
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert cli.call(export_main, [str(tmp_path / "ours" / "step_00000000"), str(tmp_path / "back")]) == 0
    assert _safetensors(tmp_path / "back") == _safetensors(tmp_path / "hf")


@pytest.mark.parametrize("field,value", [("shared_experts", 1), ("every_k_layers", 2)])
def test_moe_configs_mixtral_cannot_express_are_refused_in_one_line(field, value, tiny_data, tmp_path, capsys):
    cfg = ModelConfig(**MODEL, moe=MoEConfig(**MOE, **{field: value}))
    write_step(tmp_path / "step", Transformer(cfg), tiny_data["tokenizer"])
    capsys.readouterr()
    assert cli.call(export_main, [str(tmp_path / "step"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"model.moe.{field}={value}" in err and "Mixtral" in err, err
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").iterdir())


def test_config_mapping():
    cfg = ModelConfig(**MODEL, moe=MoEConfig(experts=8, top_k=2, expert_d_ff=40, aux_loss_coef=0.02))
    raw = {**hf_config_dict(cfg, 2, 3, 0, "float32"), "model_type": "mixtral"}
    assert raw["router_aux_loss_coef"] == 0.01 and raw["intermediate_size"] == 40  # ours / top_k
    back = model_config_from_hf(raw)
    assert back.moe == MoEConfig(experts=8, top_k=2, expert_d_ff=40, aux_loss_coef=0.02, z_loss_coef=0.0)
    with pytest.raises(ConfigError, match="router_jitter_noise=0.1 is not implemented"):
        model_config_from_hf({**raw, "router_jitter_noise": 0.1})
    with pytest.raises(ConfigError, match="num_experts_per_tok=9 must be <= num_local_experts=8"):
        model_config_from_hf({**raw, "num_experts_per_tok": 9})
    with pytest.raises(ConfigError, match="num_local_experts=4 is not implemented"):
        model_config_from_hf({**raw, "model_type": "llama", "num_local_experts": 4})


@pytest.mark.parametrize("change,named", [
    ("drop", "model.layers.1.block_sparse_moe.experts.3.w3.weight in any weight file"),
    ("add", "experts.4.w1.weight is beyond config.json's num_local_experts=4"),
])
def test_missing_and_extra_experts_are_named(change, named, tiny_data, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    make_mixtral(tmp_path / "hf", tiny_data["tokenizer"])
    f = tmp_path / "hf" / "model.safetensors"
    state = load_file(f)
    if change == "drop":
        del state["model.layers.1.block_sparse_moe.experts.3.w3.weight"]
    else:
        state["model.layers.0.block_sparse_moe.experts.4.w1.weight"] = torch.zeros(40, 32)
    save_file(state, f, metadata={"format": "pt"})
    capsys.readouterr()
    assert cli.call(import_main, [str(tmp_path / "hf"), str(tmp_path / "ours")]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1, err


def test_aux_loss_coefficient_is_divided_by_top_k_as_transformers_loss_is_top_k_times_ours():
    """Why router_aux_loss_coef = aux_loss_coef / top_k: transformers' load-balancing loss of the same router
    logits is about top_k times ours (its fᵢ sum to top_k over the slots; it pools the layers)."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    from llm.moe import balance_loss
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(64, 8, generator=gen) * 2 for _ in range(2)]
    theirs = load_balancing_loss_func(tuple(layers), 8, 2).item()
    ours = sum(balance_loss(g, 2).item() for g in layers) / 2
    assert 1.9 < theirs / ours < 2.0
