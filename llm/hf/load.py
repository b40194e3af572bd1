"""Read a Llama-family (or Mixtral) Hugging Face model directory (config.json + safetensors) as our config and weights.

Every file is checked before the weights are trusted (llm/hf/validate.py): config.json's fields by type and value,
the index's shard names confined to the directory, each safetensors header against its file and against the
config, then each tensor's values as it is read. Tensors are read one at a time with safetensors' `safe_open`
(memory-mapped), so a large model is never held twice: the state dict returned is the only copy. No transformers
import: reading needs only safetensors.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import torch

from llm.config import ConfigError, ModelConfig
from llm.files import TensorEntry, read_safetensors, safetensors_header
from typed_yaml.files import read_json
from llm.hf.convert import expert_part, from_hf_name, model_config_from_hf
from llm.hf.validate import check_headers, check_tied, check_values

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def is_hf_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and ((p / WEIGHTS_FILE).is_file() or (p / INDEX_FILE).is_file())


def read_hf_config(path: str | Path) -> ModelConfig:
    """Our ModelConfig for HF directory `path`; ConfigError when it is not one or asks for what we lack."""
    f = Path(path) / CONFIG_FILE
    if not f.exists():
        raise ConfigError(f"{path}: no {CONFIG_FILE} (not a Hugging Face model directory)")
    return model_config_from_hf(read_json(f, dict, "config.json"), str(f))


def _index_file_name(index: Path, tensor: str, name) -> str:
    """A shard name of the index, confined to the model directory: relative, without '..' (a file outside it is
    not part of this model; a shard that is a symlink, as in the hub cache, is followed as any file is)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{index}: weight_map[{tensor!r}]={name!r} must be a file name")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute() or ".." in parts:
        raise ConfigError(f"{index}: weight_map[{tensor!r}] names {name}, outside the model directory (shards are "
                          "named relative to it)")
    return name


def read_index(path: str | Path) -> dict[str, str]:
    """{HF tensor name: shard file name} of HF directory `path`'s index; ConfigError naming the index and the key."""
    f = Path(path) / INDEX_FILE
    raw = read_json(f, dict, "safetensors index")
    weight_map = raw.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConfigError(f"{f}: no weight_map object ({{tensor name: shard file}})" if weight_map is None else
                          f"{f}: weight_map must be an object ({{tensor name: shard file}}), not "
                          f"{type(weight_map).__name__}")
    if not weight_map:
        raise ConfigError(f"{f}: weight_map is empty")
    return {tensor: _index_file_name(f, tensor, name) for tensor, name in weight_map.items()}


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of HF directory `path`: the shards its index names, or model.safetensors."""
    p = Path(path)
    single, has_index = p / WEIGHTS_FILE, (p / INDEX_FILE).exists()
    if single.exists() and has_index:
        raise ConfigError(f"{p}: holds both {WEIGHTS_FILE} and {INDEX_FILE} (transformers loads the first, we would "
                          "read the shards): remove the stale one")
    if has_index:
        files = [p / n for n in sorted(set(read_index(p).values()))]
    else:
        files = [single]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        others = sorted(q.name for q in p.glob("*.bin")) + sorted(q.name for q in p.glob("*.pt"))
        why = (f" (it holds {', '.join(others[:2])}: a pickle, which we do not read; save the model with "
               "safe_serialization, the default of save_pretrained)") if others and not has_index else ""
        raise ConfigError(f"{path}: missing weight file(s) {', '.join(missing)}{why}")
    return files


def check_hf_dir(path: str | Path) -> tuple[ModelConfig, dict[str, tuple[Path, TensorEntry]]]:
    """config.json and every safetensors header of HF directory `path`, checked against each other before a
    tensor is read (llm/hf/validate.py `check_headers`); with an index, each tensor must be in the shard it names.
    Returns (config, {HF tensor name: (file, header entry)}); ConfigError naming the file and tensor otherwise."""
    p = Path(path)
    cfg = read_hf_config(p)
    files = weight_files(p)
    entries: dict[str, tuple[Path, TensorEntry]] = {}
    for f in files:
        for name, entry in safetensors_header(f).items():
            if name in entries:
                raise ConfigError(f"{p}: tensor {name} is stored twice, in {entries[name][0].name} and {f.name}")
            entries[name] = (f, entry)
    if (p / INDEX_FILE).exists():
        index = read_index(p)
        for name, shard in index.items():
            if name not in entries:
                raise ConfigError(f"{p / INDEX_FILE}: weight_map lists {name} in {shard}, which does not hold it")
            if entries[name][0] != p / shard:
                raise ConfigError(f"{p / INDEX_FILE}: weight_map puts {name} in {shard}, but it is in "
                                  f"{entries[name][0].name}")
        unlisted = sorted(set(entries) - set(index))
        if unlisted:
            raise ConfigError(f"{entries[unlisted[0]][0]}: tensor {unlisted[0]} is not in {INDEX_FILE}'s weight_map "
                              "(transformers would not load it)")
    check_headers(entries, cfg, p)
    return cfg, entries


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of HF directory `path` under llm/model.py names, in their stored dtype, checked against its
    config.json (llm/hf/validate.py): names, shapes, dtypes before any tensor is read, finiteness as each is read.

    With tied embeddings, lm_head.weight is the embedding tensor itself, as in our model's state dict (a stored
    lm_head must equal it). A Mixtral file's per-expert tensors are stacked into our (experts, out, in) parameters:
    those are the one copy made, of the expert weights only. Raises ConfigError naming the file and tensor at fault.
    """
    cfg, entries = check_hf_dir(path)
    state: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, torch.Tensor]] = {}
    stored_lm_head = None
    by_file: dict[Path, list[str]] = {}
    for name, (f, _) in entries.items():
        by_file.setdefault(f, []).append(name)
    for f, names in by_file.items():
        for hf_name, tensor in read_safetensors(f, sorted(names)):
            part = expert_part(hf_name)
            if part is not None:
                check_values(tensor, hf_name, f)
                experts.setdefault(part[0], {})[part[1]] = tensor
                continue
            ours = from_hf_name(hf_name)
            if ours is None:
                continue
            check_values(tensor, hf_name, f)
            if cfg.tie_embeddings and ours == "lm_head.weight":
                stored_lm_head = tensor
            else:
                state[ours] = tensor
    for ours, parts in experts.items():  # check_hf_dir saw every index 0..E-1 of each
        state[ours] = torch.stack([parts[e] for e in range(len(parts))])
    if cfg.tie_embeddings:
        check_tied(state, stored_lm_head, Path(path) / CONFIG_FILE)
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    return state
