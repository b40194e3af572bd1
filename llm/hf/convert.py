"""The one-to-one map between our Transformer and transformers' LlamaForCausalLM (dense) or MixtralForCausalLM (MoE):
parameter names and config.

The architectures are the same function (llm/model.py): pre-norm RMSNorm blocks, SwiGLU, grouped-query attention
and RoPE rotating the pairs (i, i + head_dim/2) ("rotate half"), which is also what HF's Llama does, so q/k
weights move over unpermuted (Meta's original checkpoints, which rotate adjacent pairs, are the ones HF permutes
on conversion). What our model does not implement is refused by `model_config_from_hf`, naming the field.

An MoE model (llm/moe.py) is Mixtral's function exactly when every block is an MoE block and there are no shared
experts: both route by softmax over all experts in fp32, take the top_k and renormalise their weights. Mixtral's
files (what transformers' save_pretrained writes, and the Hub's checkpoints) hold each expert apart:
  model.layers.i.block_sparse_moe.gate.weight          (E, d)  = our layers.i.mlp.router.weight
  model.layers.i.block_sparse_moe.experts.e.w1.weight  (F, d)  = our layers.i.mlp.experts.w_gate[e]
  model.layers.i.block_sparse_moe.experts.e.w3.weight  (F, d)  = our layers.i.mlp.experts.w_up[e]
  model.layers.i.block_sparse_moe.experts.e.w2.weight  (d, F)  = our layers.i.mlp.experts.w_down[e]
while transformers >= 5 holds them fused in memory (MixtralExperts): gate_up_proj (E, 2F, d) = cat(w_gate, w_up,
dim=1), gate first (its forward splits with .chunk(2, dim=-1) into gate, up), and down_proj (E, d, F) = w_down.
"""
from __future__ import annotations

import math
import re

from llm.config import ConfigError, ModelConfig
from llm.config.model import ROPE_SCALING_TYPES, MoEConfig, RopeScalingConfig

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
# The MoE block's tensors: ours → Mixtral's name in files (an expert's, with its index as {e}).
_MOE_ROUTER = ("mlp.router.weight", "block_sparse_moe.gate.weight")
_MOE_EXPERTS = {"mlp.experts.w_gate": "w1", "mlp.experts.w_up": "w3", "mlp.experts.w_down": "w2"}
_MOE_FROM_FILE = {v: k for k, v in _MOE_EXPERTS.items()}
_HF_EXPERT = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")
_HF_ROUTER = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight$")
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}
_FROM_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_FROM_TOP = {v: k for k, v in _TOP_NAMES.items()}
_OURS_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# Old HF checkpoints saved RoPE's inverse frequencies; they derive from the config, as our tables do.
_HF_DERIVED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral")
_DENSE_MLP = ("mlp.w_gate.weight", "mlp.w_up.weight", "mlp.w_down.weight")


def parameter_names(cfg: ModelConfig) -> set[str]:
    """Every tensor name of our Transformer's state dict for `cfg` (lm_head.weight included when tied)."""
    attn = [n for n in _LAYER_NAMES if n not in _DENSE_MLP]
    moe = [_MOE_ROUTER[0], *_MOE_EXPERTS]
    if cfg.moe is not None and cfg.moe.shared_experts:  # no HF counterpart: such a model is not exported
        moe += [f"mlp.shared.{n}" for n in _DENSE_MLP]
    return set(_TOP_NAMES) | {f"layers.{i}.{n}" for i in range(cfg.n_layers)
                              for n in attn + (moe if cfg.is_moe_layer(i) else list(_DENSE_MLP))}


def to_hf_name(name: str) -> str:
    """HF's name for our parameter `name`; an MoE expert tensor gets the file name pattern of its experts
    (`...experts.*.w1.weight`), for messages."""
    m = _OURS_LAYER.match(name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    if m and m.group(2) == _MOE_ROUTER[0]:
        return f"model.layers.{m.group(1)}.{_MOE_ROUTER[1]}"
    if m and m.group(2) in _MOE_EXPERTS:
        return f"model.layers.{m.group(1)}.block_sparse_moe.experts.*.{_MOE_EXPERTS[m.group(2)]}.weight"
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    raise ConfigError(f"parameter {name} has no counterpart in LlamaForCausalLM or MixtralForCausalLM")


def expert_part(name: str) -> tuple[str, int] | None:
    """(our stacked parameter, expert index) for a Mixtral file's expert tensor `name`
    (model.layers.i.block_sparse_moe.experts.e.w1.weight → ("layers.i.mlp.experts.w_gate", e)); None otherwise."""
    m = _HF_EXPERT.match(name)
    if m is None:
        return None
    return f"layers.{m.group(1)}.{_MOE_FROM_FILE[m.group(3)]}", int(m.group(2))


def from_hf_name(name: str) -> str | None:
    """Our name for HF tensor `name`; None for a tensor derived from the config; ConfigError for one we lack
    (a bias, a norm we do not have): loading the rest would be a different model. One expert's tensor of a
    Mixtral file is `expert_part`'s, not this function's."""
    m = _HF_ROUTER.match(name)
    if m:
        return f"layers.{m.group(1)}.{_MOE_ROUTER[0]}"
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _FROM_LAYER:
        return f"layers.{m.group(1)}.{_FROM_LAYER[m.group(2)]}"
    if name in _FROM_TOP:
        return _FROM_TOP[name]
    if _HF_DERIVED.match(name):
        return None
    raise ConfigError(f"tensor {name} has no counterpart in our model (llm/model.py); this architecture is not "
                      "supported")


def check_mixtral(cfg: ModelConfig, where: str = "model") -> None:
    """ConfigError naming the first field of an MoE `cfg` that MixtralForCausalLM cannot express."""
    m = cfg.moe
    if m.shared_experts:
        raise ConfigError(f"{where}.moe.shared_experts={m.shared_experts}: MixtralForCausalLM has no shared experts, "
                          "so this MoE model cannot be exported to Hugging Face (only shared_experts: 0 can)")
    if m.every_k_layers != 1:
        raise ConfigError(f"{where}.moe.every_k_layers={m.every_k_layers}: MixtralForCausalLM has experts in every "
                          "block, so this MoE model cannot be exported to Hugging Face (only every_k_layers: 1 can)")


def hf_model_type(cfg: ModelConfig) -> str:
    """"mixtral" for an MoE model (after `check_mixtral`), else "llama": the transformers family `cfg` exports to."""
    if cfg.moe is None:
        return "llama"
    check_mixtral(cfg)
    return "mixtral"


def hf_config_dict(cfg: ModelConfig, bos_id: int, eos_id: int, pad_id: int, dtype: str) -> dict:
    """LlamaConfig (dense) or MixtralConfig (MoE, `hf_model_type`) keyword arguments for `cfg`; the special ids are
    the tokenizer's (-1: none). ConfigError when an MoE `cfg` is not a Mixtral (`check_mixtral`)."""
    out = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.seq_len,
        initializer_range=cfg.init_std, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters=hf_rope_parameters(cfg),
        attention_bias=False, mlp_bias=False, attention_dropout=0.0,
        bos_token_id=_id(bos_id), eos_token_id=_id(eos_id), pad_token_id=_id(pad_id), dtype=dtype,
    )
    if hf_model_type(cfg) == "mixtral":
        m = cfg.moe
        del out["attention_bias"], out["mlp_bias"]  # Mixtral has neither field (nor biases)
        # transformers' load_balancing_loss_func counts fᵢ over the top_k slots (Σfᵢ = top_k, ours 1) and pools all
        # layers' tokens before the product, so its loss is ≈ top_k × ours (1.96× at top_k=2,
        # tests/llm/hf/test_mixtral.py): the coefficient is divided by top_k so that training on in transformers
        # balances about as hard as here. Mixtral has no z-loss (z_loss_coef is a training setting only: the
        # exported function is the same without it).
        out.update(intermediate_size=m.expert_d_ff, num_local_experts=m.experts, num_experts_per_tok=m.top_k,
                   router_aux_loss_coef=m.aux_loss_coef / m.top_k, output_router_logits=False, router_jitter_noise=0.0,
                   sliding_window=None)
    return out


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
        "attention_dropout": bool,
    }
    if model_type == "mixtral":
        # Multiplicative noise on the router input while training (Switch); our router has none.
        refuse["router_jitter_noise"] = bool
    else:
        refuse.update(num_local_experts=bool, num_experts=bool)
    for key, bad in refuse.items():
        if key in raw and bad(raw[key]):
            raise ConfigError(f"{where}: {key}={raw[key]!r} is not implemented by our model (llm/model.py)")
    # transformers >= 5 writes rope_parameters {rope_type, rope_theta, factor, ...}; earlier ones rope_theta and
    # rope_scaling {type or rope_type, factor, ...}.
    for key in ("rope_parameters", "rope_scaling"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{where}: {key}={raw[key]!r} must be an object ({{\"rope_type\": ...}}) or null")
    rope = dict(raw.get("rope_parameters") or {})
    default_theta = 1e6 if model_type == "mixtral" else 10000.0  # transformers' MixtralConfig.default_theta
    if "rope_theta" in raw:
        theta = _field(raw, "rope_theta", float, where, default_theta)
    else:
        theta = _field(rope, "rope_theta", float, f"{where} rope_parameters", default_theta)
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
    moe = _mixtral_moe(raw, where, d_ff) if model_type == "mixtral" else None
    rope_scaling = rope_scaling_from_hf(raw, where, seq_len)
    cfg = ModelConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, d_ff=d_ff,
        vocab_size=vocab_size, seq_len=seq_len,
        tie_embeddings=_field(raw, "tie_word_embeddings", bool, where, False), rope_theta=theta,
        norm_eps=norm_eps, init_std=init_std, moe=moe, rope_scaling=rope_scaling,
    )
    cfg.validate(where)
    return cfg


def _mixtral_moe(raw: dict, where: str, d_ff: int) -> MoEConfig:
    """Our MoEConfig for a Mixtral config.json: every block an MoE block of intermediate_size-wide experts (d_ff is
    then unused), no shared experts, the aux loss at top_k × router_aux_loss_coef (transformers' default 0.001;
    its loss is ≈ top_k × ours, see `hf_config_dict`), no z-loss."""
    experts = _field(raw, "num_local_experts", int, where)
    top_k = _field(raw, "num_experts_per_tok", int, where)
    aux = _field(raw, "router_aux_loss_coef", float, where, 0.001)
    _positive(where, num_local_experts=experts, num_experts_per_tok=top_k)
    if top_k > experts:
        raise ConfigError(f"{where}: num_experts_per_tok={top_k} must be <= num_local_experts={experts}")
    if not aux >= 0:
        raise ConfigError(f"{where}: router_aux_loss_coef={aux} must be >= 0")
    return MoEConfig(experts=experts, top_k=top_k, expert_d_ff=d_ff, shared_experts=0, every_k_layers=1,
                     aux_loss_coef=aux * top_k, z_loss_coef=0.0)


def hf_rope_parameters(cfg: ModelConfig) -> dict:
    """transformers' `rope_parameters` for `cfg`: {rope_type: default, rope_theta} unscaled, else the scheme's keys
    as transformers' ROPE_INIT_FUNCTIONS read them (the factor resolved, YaRN's attention_factor only when set)."""
    out = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    s = cfg.rope_scaling
    if s is None:
        return out
    out.update(rope_type=s.type, factor=s.resolved_factor(cfg.seq_len))
    if s.type == "linear":
        return out  # transformers' linear scaling has no original length
    out["original_max_position_embeddings"] = s.original_seq_len
    if s.type == "llama3":
        out.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor)
    else:
        out.update(beta_fast=s.beta_fast, beta_slow=s.beta_slow, truncate=s.truncate)
        if s.attention_factor is not None:
            out["attention_factor"] = s.attention_factor
    return out


def rope_scaling_from_hf(raw: dict, where: str, seq_len: int) -> RopeScalingConfig | None:
    """Our rope_scaling for a config.json's rope_parameters (transformers >= 5) or rope_scaling (earlier; it wins
    where both set a key), None when unscaled. ConfigError, naming the field, for a scheme we do not implement
    (dynamic, longrope, ...), a missing or mistyped parameter, or a partial rotary dimension."""
    scaling = raw.get("rope_scaling") or {}
    field = "rope_scaling" if scaling else "rope_parameters"
    params = {**(raw.get("rope_parameters") or {}), **scaling}
    at = f"{where} {field}"
    rope_type = params.get("rope_type", params.get("type", "default"))
    partial = _field(params, "partial_rotary_factor", float, at, 1.0)
    if partial != 1.0:
        raise ConfigError(f"{where}: {field}.partial_rotary_factor={partial} is not implemented (our RoPE rotates the "
                          "whole head)")
    if rope_type == "default":
        return None
    if rope_type not in ROPE_SCALING_TYPES:
        raise ConfigError(f"{where}: {field}.rope_type={rope_type!r} is not implemented (only default, "
                          f"{', '.join(ROPE_SCALING_TYPES)})")
    # transformers fills original_max_position_embeddings from max_position_embeddings when absent (llama3, yarn).
    original = _field(params, "original_max_position_embeddings", int, at, None if rope_type == "linear" else seq_len)
    factor = _field(params, "factor", float, at, None if rope_type == "yarn" else _REQUIRED)  # yarn: derived
    out = RopeScalingConfig(type=rope_type, factor=factor, original_seq_len=original)
    if rope_type == "llama3":
        out.low_freq_factor = _field(params, "low_freq_factor", float, at)
        out.high_freq_factor = _field(params, "high_freq_factor", float, at)
    elif rope_type == "yarn":
        # transformers: `beta_fast or 32` (a null or 0 is the default), truncate defaults to true.
        out.beta_fast = _field(params, "beta_fast", float, at, 0.0) or 32.0
        out.beta_slow = _field(params, "beta_slow", float, at, 0.0) or 1.0
        out.truncate = _field(params, "truncate", bool, at, True)
        out.attention_factor = _field(params, "attention_factor", float, at, None)
        mscale = _field(params, "mscale", float, at, 0.0)
        mscale_all_dim = _field(params, "mscale_all_dim", float, at, 0.0)
        if out.attention_factor is None and mscale and mscale_all_dim:
            # DeepSeek's form of the temperature, as transformers resolves it: a ratio of two YaRN mscales.
            f = out.resolved_factor(seq_len)
            out.attention_factor = (0.1 * mscale * math.log(f) + 1) / (0.1 * mscale_all_dim * math.log(f) + 1)
    out.validate(at, seq_len)
    return out
