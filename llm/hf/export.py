"""Export one of our checkpoints as a Hugging Face model directory that `from_pretrained` loads without custom code.

Any checkpoint kind works (docs/architecture.md, "Checkpoint kinds"): a step directory of any layout (debug, ZeRO-3,
TP, PP: each holds the consolidated single-process weights as model.pt, config.yaml and a copy of the run's
tokenizer), an alignment stage directory, a checkpoint that launch/import_hf.py wrote. All are read by
llm/train/checkpoint_reader.py `open_checkpoint`, the one reader that evaluation, the audit and consolidation share:
model.pt through llm/train/safe_load.py (audited, weights-only, memory-mapped here), checked against its config
(llm/hf/validate.py `check_state_dict`: names, shapes, floating point, finite) before anything is written.
An MoE checkpoint exports as MixtralForCausalLM when it is one (llm/hf/convert.py `check_mixtral`: no shared experts,
experts in every block); any other is refused before anything is written, naming the field. What is written:
config.json (LlamaConfig or MixtralConfig), safetensors weights (sharded with an index past `max_shard_size`) and
generation_config.json, all by transformers' save_pretrained, and the tokenizer files (data_pipeline/hf_tokenizer.py).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig
from llm.hf.convert import hf_config_dict, hf_model_type, parameter_names, to_hf_name
from llm.train.checkpoint_reader import open_checkpoint

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under the names of the in-memory HF model (LlamaForCausalLM, or MixtralForCausalLM whose
    experts are fused: gate_up_proj = cat(w_gate, w_up, dim=1), a new tensor; down_proj = w_down); the tied lm_head
    is left out (HF ties it to the embedding itself)."""
    expected = parameter_names(cfg)
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)
        raise ConfigError(f"model.pt does not match its config: {', '.join(odd[:3])} missing or unexpected")
    out = {}
    for k, v in state.items():
        if cfg.tie_embeddings and k == "lm_head.weight" or k.endswith("mlp.experts.w_up"):
            continue
        if k.endswith("mlp.experts.w_gate"):
            prefix = "model." + k.removesuffix("w_gate")
            out[prefix + "gate_up_proj"] = torch.cat([v, state[k.removesuffix("w_gate") + "w_up"]], dim=1)
        elif k.endswith("mlp.experts.w_down"):
            out["model." + k.removesuffix("w_down") + "down_proj"] = v
        elif k.endswith("mlp.router.weight"):
            out["model." + k.removesuffix("router.weight") + "gate.weight"] = v
        else:
            out[to_hf_name(k)] = v
    return out


def export_hf(checkpoint: str | Path, out_dir: str | Path, force: bool = False, max_shard_size: str = "5GB") -> Path:
    """Write checkpoint as an HF model directory out_dir. Raises ConfigError on a bad source or a non-empty out_dir
    (unless force, which replaces it).

    The HF model is built on the meta device (accelerate's init_empty_weights) and its parameters are the
    memory-mapped tensors of model.pt (load_state_dict(assign=True)): no second copy of the weights exists, but for
    an MoE model's fused gate_up_proj (the expert gate and up weights, concatenated).
    """
    from accelerate import init_empty_weights
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    from data_pipeline.hf_tokenizer import is_hf_tokenizer, load_tokenizer, save_hf_tokenizer

    src = open_checkpoint(checkpoint)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "mixtral": (MixtralConfig, MixtralForCausalLM)}[hf_model_type(src.model)]
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ConfigError(f"{out_dir} exists and is not empty (pass --force to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tok = load_tokenizer(src.tokenizer)
    if tok.vocab_size > src.model.vocab_size:
        raise ConfigError(f"{src.tokenizer} has {tok.vocab_size} tokens but the model only {src.model.vocab_size}")
    # Audited, weights-only and memory-mapped; then checked against the config (names, shapes, dtypes, finiteness).
    state = src.state_dict(mmap=True)
    dtype = next(iter(state.values())).dtype
    config = config_cls(**hf_config_dict(src.model, tok.bos_id, tok.eos_id, tok.pad_id,
                                          str(dtype).removeprefix("torch.")))
    with init_empty_weights():
        model = model_cls(config)
    result = model.load_state_dict(hf_state_dict(state, src.model), strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (src.model.tie_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"{checkpoint}: {model_cls.__name__} wants {missing[:3]}, got extra "
                          f"{result.unexpected_keys[:3]}")
    model.tie_weights()
    model.generation_config = GenerationConfig(**{k: v for k, v in (("bos_token_id", tok.bos_id),
                                                                    ("eos_token_id", tok.eos_id),
                                                                    ("pad_token_id", tok.pad_id)) if v >= 0})
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    if is_hf_tokenizer(src.tokenizer):
        folder = src.tokenizer if src.tokenizer.is_dir() else src.tokenizer.parent
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, out / name)
    else:
        save_hf_tokenizer(src.tokenizer, out)
    return out
