"""The one-to-one map between our Transformer and transformers' LlamaForCausalLM: parameter names and config.

The architectures are the same function (llm/model.py): pre-norm RMSNorm blocks, SwiGLU, grouped-query attention
and RoPE rotating the pairs (i, i + head_dim/2) ("rotate half"), which is also what HF's Llama does, so q/k
weights move over unpermuted (Meta's original checkpoints, which rotate adjacent pairs, are the ones HF permutes
on conversion). What our model does not implement is refused by `model_config_from_hf`, naming the field.
"""
from __future__ import annotations

import re

from llm.config import ConfigError, ModelConfig

# ours → HF, per layer and outside the layers.
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w_gate.weight": "mlp.gate_proj.weight",
    "mlp.w_up.weight": "mlp.up_proj.weight",
    "mlp.w_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}
_FROM_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_FROM_TOP = {v: k for k, v in _TOP_NAMES.items()}
_OURS_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# Old HF checkpoints saved RoPE's inverse frequencies; they derive from the config, as our tables do.
_HF_DERIVED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")

SUPPORTED_MODEL_TYPES = ("llama", "mistral")


def parameter_names(cfg: ModelConfig) -> set[str]:
    """Every tensor name of our Transformer's state dict for `cfg` (lm_head.weight included when tied)."""
    return set(_TOP_NAMES) | {f"layers.{i}.{n}" for i in range(cfg.n_layers) for n in _LAYER_NAMES}


def to_hf_name(name: str) -> str:
    m = _OURS_LAYER.match(name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    raise ConfigError(f"parameter {name} has no counterpart in LlamaForCausalLM")


def from_hf_name(name: str) -> str | None:
    """Our name for HF tensor `name`; None for a tensor derived from the config; ConfigError for one we lack
    (a bias, an expert, a norm we do not have): loading the rest would be a different model."""
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _FROM_LAYER:
        return f"layers.{m.group(1)}.{_FROM_LAYER[m.group(2)]}"
    if name in _FROM_TOP:
        return _FROM_TOP[name]
    if _HF_DERIVED.match(name):
        return None
    raise ConfigError(f"tensor {name} has no counterpart in our model (llm/model.py); this architecture is not "
                      "supported")


def hf_config_dict(cfg: ModelConfig, bos_id: int, eos_id: int, pad_id: int, dtype: str) -> dict:
    """LlamaConfig keyword arguments for `cfg`; the special ids are the tokenizer's (-1: none)."""
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.seq_len,
        initializer_range=cfg.init_std, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False, mlp_bias=False, attention_dropout=0.0,
        bos_token_id=_id(bos_id), eos_token_id=_id(eos_id), pad_token_id=_id(pad_id), dtype=dtype,
    )


def _id(i: int) -> int | None:
    return None if i < 0 else i


_REQUIRED = object()


def _field(raw: dict, key: str, kind: type, where: str, default=_REQUIRED):
    """raw[key] as a `kind` (int: a JSON integer; float: any JSON number; bool: true/false); ConfigError naming
    `where` and the key when it is missing (without a default) or of another type ("64", 2.5, "false")."""
    value = raw.get(key)
    if value is None:
        if default is _REQUIRED:
            raise ConfigError(f"{where}: no {key} (a Llama config.json sets it)")
        return default
    ok = {int: type(value) is int, bool: type(value) is bool,
          float: type(value) in (int, float)}[kind]
    if not ok:
        raise ConfigError(f"{where}: {key}={value!r} must be {_KIND_NAMES[kind]}, not {type(value).__name__}")
    return float(value) if kind is float else value


_KIND_NAMES = {int: "an integer", bool: "true or false", float: "a number"}


def _positive(where: str, **values) -> None:
    for key, value in values.items():
        if not value > 0:  # `not >` also refuses nan
            raise ConfigError(f"{where}: {key}={value} must be positive")


def model_config_from_hf(raw: dict, where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a Llama-family config.json (as a dict). Raises ConfigError naming the first field
    that asks for something llm/model.py does not do, is missing, or has the wrong type or value."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be an object, not {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{where}: model_type={model_type!r} is not supported "
                          f"(only {', '.join(SUPPORTED_MODEL_TYPES)})")
    refuse = {
        "hidden_act": lambda v: v not in (None, "silu"),
        "attention_bias": bool, "mlp_bias": bool,
        "sliding_window": lambda v: v is not None,
        "num_local_experts": bool, "num_experts": bool,
        "attention_dropout": bool,
    }
    for key, bad in refuse.items():
        if key in raw and bad(raw[key]):
            raise ConfigError(f"{where}: {key}={raw[key]!r} is not implemented by our model (llm/model.py)")
    # transformers >= 5 writes rope_parameters {rope_type, rope_theta}; earlier ones rope_theta and rope_scaling.
    for key in ("rope_parameters", "rope_scaling"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{where}: {key}={raw[key]!r} must be an object ({{\"rope_type\": ...}}) or null")
    rope = dict(raw.get("rope_parameters") or {})
    scaling = raw.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", rope.get("rope_type", "default")))
    if rope_type != "default":
        # Llama 3.1's "llama3" rescaling of the frequencies (and linear/dynamic/yarn) is refused, not approximated.
        field = "rope_scaling" if scaling else "rope_parameters"
        raise ConfigError(f"{where}: {field}.rope_type={rope_type!r} is not implemented (our RoPE is unscaled)")
    if "rope_theta" in raw:
        theta = _field(raw, "rope_theta", float, where, 10000.0)
    else:
        theta = _field(rope, "rope_theta", float, f"{where} rope_parameters", 10000.0)
    n_layers = _field(raw, "num_hidden_layers", int, where)
    d_model = _field(raw, "hidden_size", int, where)
    n_heads = _field(raw, "num_attention_heads", int, where)
    _positive(where, num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads)
    n_kv_heads = _field(raw, "num_key_value_heads", int, where, n_heads)
    head_dim = _field(raw, "head_dim", int, where, None)
    if head_dim is None:
        if d_model % n_heads:
            raise ConfigError(f"{where}: num_attention_heads={n_heads} does not divide hidden_size={d_model} "
                              "(and no head_dim is set)")
        head_dim = d_model // n_heads
    d_ff = _field(raw, "intermediate_size", int, where)
    vocab_size = _field(raw, "vocab_size", int, where)
    seq_len = _field(raw, "max_position_embeddings", int, where)
    _positive(where, num_key_value_heads=n_kv_heads, head_dim=head_dim, intermediate_size=d_ff,
              vocab_size=vocab_size, max_position_embeddings=seq_len)
    if n_heads % n_kv_heads:
        raise ConfigError(f"{where}: num_key_value_heads={n_kv_heads} must divide num_attention_heads={n_heads}")
    if head_dim % 2:
        raise ConfigError(f"{where}: head_dim={head_dim} must be even (rotary embeddings rotate pairs)")
    norm_eps = _field(raw, "rms_norm_eps", float, where, 1e-6)
    init_std = _field(raw, "initializer_range", float, where, 0.02)
    _positive(where, rope_theta=theta, rms_norm_eps=norm_eps, initializer_range=init_std)
    cfg = ModelConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, d_ff=d_ff,
        vocab_size=vocab_size, seq_len=seq_len,
        tie_embeddings=_field(raw, "tie_word_embeddings", bool, where, False), rope_theta=theta,
        norm_eps=norm_eps, init_std=init_std,
    )
    cfg.validate(where)
    return cfg
