"""Weights checked against the config they claim to fit, tensor by tensor, before a model is built or a file written.

One set of checks for every way a model enters from outside: a Hugging Face directory (launch/import_hf.py, the
alignment chain's `base.path`, evaluation; its safetensors headers are checked before a tensor is read, its values
as each is read, by llm/hf/load.py) and a model.pt state dict (export, evaluation). A tensor must

- have a name llm/model.py has a place for (llm/hf/convert.py), and every place must be filled;
- have the shape the config implies (`expected_shapes`, which names the config fields behind each dimension, so a
  hidden or FFN size that disagrees with the tensors, a transposed or truncated tensor, or a vocabulary larger
  than the embedding is named with the field to fix);
- be floating point (integer or boolean "weights" are a different file, not a model) and finite (a NaN or inf
  weight makes every score NaN, or silently wrong);
- under tied embeddings, be the embedding where an lm_head is stored as well: a different lm_head is a different
  model, which `tie_word_embeddings: false` imports as it is.

Every failure is a ConfigError naming the file and the tensor.
"""
from __future__ import annotations

from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig
from llm.files import FLOAT_DTYPES, TensorEntry
from llm.hf.convert import expert_part, from_hf_name, parameter_names, to_hf_name

FLOAT_TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """{our parameter name: (shape, the config.json fields behind it)} of llm/model.py's Transformer for `cfg`
    (equal to `Transformer(cfg).state_dict()`'s shapes: tests/llm/hf/test_validate.py)."""
    d, q, kv, ff = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.d_ff
    per_layer = {
        "attn_norm.weight": ((d,), "hidden_size"),
        "mlp_norm.weight": ((d,), "hidden_size"),
        "attn.wq.weight": ((q, d), "num_attention_heads·head_dim × hidden_size"),
        "attn.wk.weight": ((kv, d), "num_key_value_heads·head_dim × hidden_size"),
        "attn.wv.weight": ((kv, d), "num_key_value_heads·head_dim × hidden_size"),
        "attn.wo.weight": ((d, q), "hidden_size × num_attention_heads·head_dim"),
        "mlp.w_gate.weight": ((ff, d), "intermediate_size × hidden_size"),
        "mlp.w_up.weight": ((ff, d), "intermediate_size × hidden_size"),
        "mlp.w_down.weight": ((d, ff), "hidden_size × intermediate_size"),
    }
    moe_layer = {k: v for k, v in per_layer.items() if not k.startswith("mlp.")}
    if cfg.moe is not None:
        e, f = cfg.moe.experts, cfg.moe.expert_d_ff
        # Mixtral's config.json names an expert's width intermediate_size (our moe.expert_d_ff).
        moe_layer.update({
            "mlp.router.weight": ((e, d), "num_local_experts × hidden_size"),
            "mlp.experts.w_gate": ((e, f, d), "num_local_experts × intermediate_size × hidden_size"),
            "mlp.experts.w_up": ((e, f, d), "num_local_experts × intermediate_size × hidden_size"),
            "mlp.experts.w_down": ((e, d, f), "num_local_experts × hidden_size × intermediate_size"),
        })
        if cfg.moe.shared_experts:  # model.pt only: Mixtral has none (llm/hf/convert.py `check_mixtral`)
            s, why = cfg.moe.shared_experts * f, "moe.shared_experts·moe.expert_d_ff"
            moe_layer.update({"mlp.shared.w_gate.weight": ((s, d), f"{why} × d_model"),
                              "mlp.shared.w_up.weight": ((s, d), f"{why} × d_model"),
                              "mlp.shared.w_down.weight": ((d, s), f"d_model × {why}")})
    out = {"tok_embeddings.weight": ((cfg.vocab_size, d), "vocab_size × hidden_size"),
           "lm_head.weight": ((cfg.vocab_size, d), "vocab_size × hidden_size"),
           "norm.weight": ((d,), "hidden_size")}
    for i in range(cfg.n_layers):
        out.update({f"layers.{i}.{k}": v for k, v in (moe_layer if cfg.is_moe_layer(i) else per_layer).items()})
    return out


def _shape_problem(shape: tuple[int, ...], ours: str, cfg: ModelConfig, one_expert: bool = False) -> str | None:
    """What is wrong with `shape` for our parameter `ours` (one_expert: for one expert's slice of it); None if right."""
    want, fields = expected_shapes(cfg)[ours]
    if one_expert:
        want, fields = want[1:], fields.split(" × ", 1)[1]
    if tuple(shape) == want:
        return None
    hint = " (transposed?)" if len(want) == 2 and tuple(shape) == want[::-1] else ""
    return f"has shape {list(shape)} but the config ({fields}) gives {list(want)}{hint}"


# config.json's names of the shape fields → ours (config.yaml's model section, stage.json's model).
_OUR_FIELDS = {"hidden_size": "d_model", "intermediate_size": "d_ff", "num_attention_heads": "n_heads",
               "num_key_value_heads": "n_kv_heads"}


def _our_field_names(text: str) -> str:
    if "num_local_experts" in text:  # an expert's intermediate_size is our moe.expert_d_ff, not d_ff
        text = text.replace("intermediate_size", "moe.expert_d_ff").replace("num_local_experts", "moe.experts")
    for hf, ours in _OUR_FIELDS.items():
        text = text.replace(hf, ours)
    return text


def check_headers(entries: dict[str, tuple[Path, TensorEntry]], cfg: ModelConfig, directory: Path) -> None:
    """Check the safetensors headers of an HF directory against its config: {HF tensor name: (file, entry)}.
    Raises ConfigError naming the file and the tensor: a name we have no place for, one beyond num_hidden_layers,
    a wrong shape, a non-float dtype, or a tensor the config needs that no file holds."""
    expected = parameter_names(cfg)
    present = set()
    experts: dict[str, set[int]] = {}  # our stacked expert parameter → the expert indices found for it
    for name in sorted(entries):
        f, entry = entries[name]
        part = expert_part(name)
        try:
            ours = part[0] if part else from_hf_name(name)
        except ConfigError as e:
            raise ConfigError(f"{f}: {e}") from None
        if ours is None:
            continue
        if ours not in expected:
            if int(ours.split(".")[1]) < cfg.n_layers:
                raise ConfigError(f"{f}: tensor {name} has no place in the model config.json describes (model_type "
                                  f"{'mixtral' if cfg.moe else 'llama'}: {'experts' if cfg.moe else 'no experts'})")
            raise ConfigError(f"{f}: tensor {name} is beyond config.json's num_hidden_layers={cfg.n_layers}")
        if part and part[1] >= cfg.moe.experts:
            raise ConfigError(f"{f}: tensor {name} is beyond config.json's num_local_experts={cfg.moe.experts}")
        if entry.dtype not in FLOAT_DTYPES:
            raise ConfigError(f"{f}: tensor {name} is {entry.dtype}; weights must be floating point "
                              f"({', '.join(FLOAT_DTYPES)})")
        problem = _shape_problem(entry.shape, ours, cfg, one_expert=part is not None)
        if problem:
            raise ConfigError(f"{f}: tensor {name} {problem}")
        if part:
            experts.setdefault(ours, set()).add(part[1])
        else:
            present.add(ours)
    for ours, found in sorted(experts.items()):
        lacking = sorted(set(range(cfg.moe.experts)) - found)
        if lacking:
            raise ConfigError(f"{directory}: no tensor {to_hf_name(ours).replace('*', str(lacking[0]))} in any "
                              f"weight file (config.json num_local_experts={cfg.moe.experts})")
        present.add(ours)
    if cfg.tie_embeddings:
        present.add("lm_head.weight")  # the embedding itself (checked to equal a stored lm_head by check_tied)
    missing = sorted(expected - present)
    if missing:
        names = ", ".join(to_hf_name(m) for m in missing[:3])
        why = " (config.json tie_word_embeddings is false)" if missing == ["lm_head.weight"] else ""
        raise ConfigError(f"{directory}: no tensor {names}{' …' if len(missing) > 3 else ''} in any weight file"
                          f"{why}")


def check_values(tensor: torch.Tensor, name: str, where: str | Path) -> None:
    """ConfigError naming `where` and tensor `name` unless every value of `tensor` is finite."""
    bad = (~torch.isfinite(tensor)).sum().item()
    if bad:
        raise ConfigError(f"{where}: tensor {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}; a model "
                          "with them scores NaN (or wrong): it is not one to load")


def check_tied(state: dict[str, torch.Tensor], stored_lm_head: torch.Tensor | None, where: str | Path) -> None:
    """Under tied embeddings, a stored lm_head must be the embedding (some writers save both copies)."""
    if stored_lm_head is not None and not torch.equal(stored_lm_head, state["tok_embeddings.weight"]):
        raise ConfigError(f"{where}: tie_word_embeddings=true ties lm_head to the embedding, but an lm_head.weight is "
                          "stored and differs from model.embed_tokens.weight; set tie_word_embeddings to false to "
                          "load the two as they are")


def check_state_dict(state, cfg: ModelConfig, where: str | Path) -> dict[str, torch.Tensor]:
    """`state` (a loaded model.pt) checked against `cfg`: a {name: tensor} mapping holding exactly llm/model.py's
    parameter names, with the config's shapes, floating point and finite. Returns it; ConfigError naming `where`
    and the first tensor at fault otherwise."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ConfigError(f"{where}: not a model state dict ({{parameter name: tensor}}, as torch.save("
                          "model.state_dict()) writes it)")
    expected = parameter_names(cfg)
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing:
        raise ConfigError(f"{where}: no tensor {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''} "
                          f"(the config has n_layers={cfg.n_layers})")
    if extra:
        raise ConfigError(f"{where}: tensor {extra[0]} has no place in the model its config describes "
                          f"(n_layers={cfg.n_layers})")
    for name in sorted(state):
        t = state[name]
        if t.dtype not in FLOAT_TORCH_DTYPES:
            raise ConfigError(f"{where}: tensor {name} is {str(t.dtype).removeprefix('torch.')}; weights must be "
                              "floating point")
        problem = _shape_problem(tuple(t.shape), name, cfg)
        if problem:
            raise ConfigError(f"{where}: tensor {name} {_our_field_names(problem)}")
        check_values(t, name, where)
    return state
