"""llm/rope.py against transformers (the tables of linear, llama3 and yarn, and a whole model's logits on the same
weights through llm/hf/convert.py both ways), and model.rope_scaling's validation."""
from __future__ import annotations

import math

import pytest
import torch

from llm.config import ConfigError, ModelConfig, config_from_dict
from llm.config.model import RopeScalingConfig
from llm.hf.convert import from_hf_name, hf_config_dict, model_config_from_hf
from llm.hf.export import hf_state_dict
from llm.model import Transformer
from llm.rope import rope_tables
from tests.llm.hf.helpers import LOGITS_ATOL, compare_with_hf

pytestmark = pytest.mark.unit

# A 4× extension of 16 positions to 64; the llama3 band edges (16/4 and 16/1 positions) and yarn's ramp
# (β 32 → 1 turns over 16 positions) both fall inside a 16-wide head at θ=500 (wavelengths 6 to 2,000).
SCHEMES = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "yarn_explicit": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 8.0,
                      "beta_slow": 2.0, "attention_factor": 1.3, "truncate": False},
}
THETA, HEAD_DIM, SEQ_LEN = 500.0, 16, 64


def _hf_config(rope: dict, **kw):
    from transformers import LlamaConfig
    shape = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=HEAD_DIM, max_position_embeddings=SEQ_LEN, rms_norm_eps=1e-6)
    return LlamaConfig(**{**shape, **kw}, rope_parameters={**rope, "rope_theta": THETA})


def _hf_tables(config, n: int):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    cos, sin = LlamaRotaryEmbedding(config)(torch.zeros(1, dtype=torch.float32), torch.arange(n)[None])
    return cos[0, :, :HEAD_DIM // 2], sin[0, :, :HEAD_DIM // 2]  # HF repeats the half: cat(freqs, freqs)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_tables_equal_transformers(scheme):
    cfg = model_config_from_hf({**_hf_config(SCHEMES[scheme]).to_dict(), "model_type": "llama"})
    assert cfg.rope_scaling.type == SCHEMES[scheme]["rope_type"]
    cos, sin = rope_tables(HEAD_DIM, SEQ_LEN, THETA, cfg.rope_scaling)
    hf_cos, hf_sin = _hf_tables(_hf_config(SCHEMES[scheme]), SEQ_LEN)
    # transformers computes the angles in fp32 (≈ 6e-8 relative at position 63), we in fp64.
    assert (cos - hf_cos).abs().max() < 1e-5 and (sin - hf_sin).abs().max() < 1e-5
    plain, _ = rope_tables(HEAD_DIM, SEQ_LEN, THETA)
    assert not torch.allclose(cos, plain, atol=1e-3)  # the scaling did something


def test_yarn_attention_factor_is_the_papers():
    s = RopeScalingConfig(type="yarn", original_seq_len=16)
    cos, sin = rope_tables(HEAD_DIM, SEQ_LEN, THETA, s)
    assert cos[0, 0].item() == pytest.approx(0.1 * math.log(4) + 1)  # position 0: cos 1 × the attention factor
    # The highest frequency is kept (extrapolated), the lowest divided by the factor.
    plain_cos, _ = rope_tables(HEAD_DIM, SEQ_LEN, THETA)
    assert torch.allclose(cos[:, 0] / cos[0, 0], plain_cos[:, 0], atol=1e-6)
    low = 1 / THETA ** ((HEAD_DIM - 2) / HEAD_DIM)
    assert torch.allclose(sin[:, -1] / cos[0, 0], torch.sin(torch.arange(SEQ_LEN) * low / 4).float(), atol=1e-6)


def _ours_from_hf(hf, cfg):
    ours = Transformer(cfg)
    ours.load_state_dict({from_hf_name(k): v for k, v in hf.state_dict().items()})
    return ours


@pytest.mark.parametrize("scheme", ["linear", "llama3", "yarn"])
def test_logits_equal_transformers_after_import_and_export(scheme):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    hf = LlamaForCausalLM(_hf_config(SCHEMES[scheme], tie_word_embeddings=False)).eval()
    cfg = model_config_from_hf({**hf.config.to_dict(), "model_type": "llama"})
    ours = _ours_from_hf(hf, cfg)
    diff = compare_with_hf(ours, hf, cfg.vocab_size, SEQ_LEN)
    assert diff["logits"] < LOGITS_ATOL and diff["loss"] < 1e-5 and diff["generate_equal"], diff
    # Export: the config transformers builds from ours, with our weights, is the same function again.
    back = LlamaForCausalLM(LlamaConfig(**hf_config_dict(cfg, -1, -1, -1, "float32"))).eval()
    back.load_state_dict(hf_state_dict(ours.state_dict(), cfg), strict=False)
    back.tie_weights()
    diff = compare_with_hf(ours, back, cfg.vocab_size, SEQ_LEN)
    assert diff["logits"] < LOGITS_ATOL and diff["generate_equal"], diff
    assert {k: v for k, v in back.config.rope_parameters.items() if k in SCHEMES[scheme]} == \
        {**SCHEMES[scheme]}


def test_factor_defaults_to_the_extension_ratio():
    cfg = ModelConfig(seq_len=1024, rope_scaling=RopeScalingConfig(type="yarn", original_seq_len=256))
    cfg.validate()
    assert cfg.rope_scaling.resolved_factor(cfg.seq_len) == 4.0
    assert hf_config_dict(cfg, -1, -1, -1, "float32")["rope_parameters"]["factor"] == 4.0


def test_unscaled_tables_are_unchanged():
    inv = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
    angles = torch.outer(torch.arange(SEQ_LEN, dtype=torch.float64), inv)
    cos, sin = rope_tables(HEAD_DIM, SEQ_LEN, THETA)
    assert torch.equal(cos, angles.cos().float()) and torch.equal(sin, angles.sin().float())


@pytest.mark.parametrize("scaling, rule", [
    ({"type": "dynamic", "factor": 2},
     r"model.rope_scaling.type='dynamic' is not supported \(only linear, llama3, yarn\)"),
    ({"type": "yarn"}, "model.rope_scaling.original_seq_len is not set: yarn needs the seq_len"),
    ({"type": "linear"}, "model.rope_scaling.factor is not set"),
    ({"type": "linear", "factor": 0.5}, "model.rope_scaling.factor=0.5 must be >= 1"),
    ({"type": "yarn", "original_seq_len": 512}, r"model.rope_scaling.factor=0.5 must be >= 1 \(model.seq_len"),
    ({"type": "llama3", "original_seq_len": 64, "factor": 4, "low_freq_factor": 4, "high_freq_factor": 4},
     "need 0 < low_freq_factor < high_freq_factor"),
    ({"type": "yarn", "original_seq_len": 64, "beta_fast": 1, "beta_slow": 1}, "need 0 < beta_slow < beta_fast"),
    ({"type": "yarn", "original_seq_len": 64, "attention_factor": 0}, "attention_factor=0.0 must be positive"),
    ({"type": "yarn", "original_seq_len": -3}, "original_seq_len=-3 must be positive"),
    ({"typ": "yarn"}, "unknown key 'model.rope_scaling.typ'; did you mean 'model.rope_scaling.type'"),
])
def test_config_mistakes_are_one_line_naming_the_key(scaling, rule):
    with pytest.raises(ConfigError, match=rule) as e:
        config_from_dict({"model": {"seq_len": 256, "rope_scaling": scaling}, "data": {"paths": ["x"]}})
    assert "\n" not in str(e.value)
