"""Bad inputs on the Hugging Face and export paths, each run against the real entry points as a user would.

    python bench/hardening/hf.py [--root REPO] [--only SUBSTR] [--entry import|export|eval] [--jobs 2]
                                 [--out results.json]

Builds (once, under a temp dir) a random-init LlamaForCausalLM saved by transformers with our tiny tokenizer, a
sharded copy, a tied copy and an imported checkpoint; then every case copies one of them, breaks one thing, and runs
launch/import_hf.py, launch/export_hf.py or launch/evaluate.py of REPO (default: this checkout; point it at a
pristine `git archive HEAD` copy to measure "before"): the `main(argv)` of each, called in one worker subprocess per
entry point (as `run(main)` or, before launch/cli.py, `sys.exit(main())` would run it; a subprocess per case costs
~8 CPU-s of imports). Each outcome is one of:

- ok          a valid input (a control) accepted, or a bad one refused with one line naming what it must name;
- clear       a bad input refused: non-zero exit, no traceback, the line names the file (and key or tensor);
- traceback   a non-zero exit with a Python traceback;
- silent      exit 0 on a bad input (the problem surfaces later, or never);
- late        refused, but the line does not name what it should, or the output directory was written first;
- refused     a control (a valid input) refused: a false alarm.

Prints a table and the counts; --out writes them as JSON.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    name: str
    entry: str  # import | export | eval
    base: str  # which prepared input to copy: hf | sharded | tied | ckpt | stage
    breaks: Callable[[Path], None] | None
    must_name: tuple[str, ...] = ()  # substrings the error line must hold (the file, the key or tensor)
    control: bool = False


# ---------------------------------------------------------------- helpers that break things

def _cfg(d: Path, **updates):
    def edit(raw):
        for k, v in updates.items():
            if v is _DROP:
                raw.pop(k, None)
            else:
                raw[k] = v
        return raw
    p = d / "config.json"
    p.write_text(json.dumps(edit(json.loads(p.read_text()))))


_DROP = object()


def cfg(**updates):
    return lambda d: _cfg(d, **updates)


def write(name, content: bytes | str):
    def go(d: Path):
        p = d / name
        if p.is_dir():
            shutil.rmtree(p)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return go


def remove(name):
    def go(d: Path):
        p = d / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return go


def make_dir(name):
    def go(d: Path):
        (d / name).unlink()
        (d / name).mkdir()
    return go


def truncate(name, keep_fraction=None, drop_bytes=None):
    def go(d: Path):
        p = d / name
        data = p.read_bytes()
        n = int(len(data) * keep_fraction) if keep_fraction is not None else len(data) - drop_bytes
        p.write_bytes(data[:n])
    return go


def append(name, junk: bytes):
    def go(d: Path):
        with open(d / name, "ab") as f:
            f.write(junk)
    return go


def tensors(name="model.safetensors", fn=None):
    """Rewrite safetensors file `name` with fn(dict of tensors) (fn edits the dict in place)."""
    def go(d: Path):
        from safetensors.torch import load_file, save_file
        state = load_file(str(d / name))
        fn(state)
        save_file(state, str(d / name), metadata={"format": "pt"})
    return go


def header(name="model.safetensors", fn=None, raw: bytes | None = None):
    """Rewrite the JSON header of a safetensors file (fn edits the parsed dict) keeping its data bytes."""
    def go(d: Path):
        p = d / name
        data = p.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        hdr = json.loads(data[8:8 + n])
        new = raw if raw is not None else json.dumps(fn(hdr) or hdr).encode()
        p.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
    return go


def index(fn):
    def go(d: Path):
        p = d / "model.safetensors.index.json"
        raw = json.loads(p.read_text())
        out = fn(raw)
        p.write_text(json.dumps(raw if out is None else out))
    return go


def pt(fn):
    """Rewrite model.pt with fn(state) (in place, or its return value)."""
    def go(d: Path):
        import torch
        state = torch.load(d / "model.pt", weights_only=True)
        out = fn(state)
        torch.save(state if out is None else out, d / "model.pt")
    return go


def chain(*steps):
    def go(d: Path):
        for s in steps:
            s(d)
    return go


def set_t(key, fn):
    def go(state):
        state[key] = fn(state[key])
    return go


class Payload:
    """Unpickling this runs code (touches a marker file next to the checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",)


def crafted(d: Path):
    import torch
    state = torch.load(d / "model.pt", weights_only=True)
    state["__extra__"] = Payload(d.parent / "PWNED")
    torch.save(state, d / "model.pt")


def shard_names(d: Path) -> list[str]:
    return sorted(set(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"].values()))


def nan_at(t, value=math.nan):
    t = t.clone()
    t.view(-1)[0] = value
    return t


def move_tensor_to_other_shard(d: Path):
    """The index still says the old shard: the tensor is in another file than the index names."""
    from safetensors.torch import load_file, save_file
    a, b = shard_names(d)[:2]
    sa, sb = load_file(str(d / a)), load_file(str(d / b))
    key = sorted(sa)[0]
    sb[key] = sa.pop(key)
    save_file(sa, str(d / a), metadata={"format": "pt"})
    save_file(sb, str(d / b), metadata={"format": "pt"})


def duplicate_in_two_shards(d: Path):
    from safetensors.torch import load_file, save_file
    a, b = shard_names(d)[:2]
    sa, sb = load_file(str(d / a)), load_file(str(d / b))
    key = sorted(sa)[0]
    sb[key] = sa[key] * 2
    save_file(sb, str(d / b), metadata={"format": "pt"})


def outside_shard(d: Path):
    """The index names ../outside.safetensors (a copy of a real shard, sitting next to the model directory)."""
    first = shard_names(d)[0]
    shutil.copyfile(d / first, d.parent / "outside.safetensors")
    (d / first).unlink()
    index(lambda raw: {**raw, "weight_map": {k: ("../outside.safetensors" if v == first else v)
                                             for k, v in raw["weight_map"].items()}})(d)


def absolute_shard(d: Path):
    first = shard_names(d)[0]
    target = d.parent / "abs.safetensors"
    shutil.copyfile(d / first, target)
    (d / first).unlink()
    index(lambda raw: {**raw, "weight_map": {k: (str(target) if v == first else v)
                                             for k, v in raw["weight_map"].items()}})(d)


def extra_in_shard(d: Path):
    import torch
    tensors(shard_names(d)[0], lambda s: s.__setitem__("model.layers.0.self_attn.q_proj.bias", torch.zeros(64)))(d)


def pytorch_bin_only(d: Path):
    import torch
    from safetensors.torch import load_file
    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()


def both_single_and_index(d: Path):
    from safetensors.torch import load_file, save_file
    state = load_file(str(d / "model.safetensors"))
    save_file(state, str(d / "model-00001-of-00001.safetensors"), metadata={"format": "pt"})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in state}}))
    tensors(fn=lambda s: s.__setitem__("model.norm.weight", s["model.norm.weight"] * 0))(d)


def symlink_shard_outside(d: Path):
    """A shard that is a symlink to a file outside the directory, as in the Hugging Face hub cache: valid."""
    first = shard_names(d)[0]
    blobs = d.parent / "blobs"
    blobs.mkdir()
    shutil.move(str(d / first), blobs / "sha")
    (d / first).symlink_to(Path("..") / "blobs" / "sha")


def stage_json(content):
    return write("stage.json", content)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    import torch
    C = []

    def imp(name, breaks, *must, base="hf", control=False):
        C.append(Case(name, "import", base, breaks, must, control))

    def exp(name, breaks, *must, base="ckpt", control=False):
        C.append(Case(name, "export", base, breaks, must, control))

    def ev(name, breaks, *must, base="hf", control=False):
        C.append(Case(name, "eval", base, breaks, must, control))

    # Controls: valid inputs must go through.
    imp("control: single file", None, control=True)
    imp("control: sharded with index", None, base="sharded", control=True)
    imp("control: tied embeddings", None, base="tied", control=True)
    imp("control: bf16 weights", tensors(fn=lambda s: s.update({k: v.bfloat16() for k, v in s.items()})),
        control=True)
    imp("control: shard symlinked from a hub-style blob store", symlink_shard_outside, base="sharded", control=True)
    imp("control: tied config, lm_head stored equal to embedding",
        tensors(fn=lambda s: s.__setitem__("lm_head.weight", s["model.embed_tokens.weight"].clone())),
        base="tied", control=True)
    exp("control: export", None, control=True)
    exp("control: export of a stage directory", None, base="stage", control=True)
    ev("control: evaluate HF dir", None, control=True)

    # config.json as a file
    imp("config.json missing", remove("config.json"), "config.json")
    imp("config.json empty", write("config.json", ""), "config.json")
    imp("config.json is a list", write("config.json", "[1, 2]"), "config.json")
    imp("config.json truncated", truncate("config.json", 0.5), "config.json")
    imp("config.json binary garbage", write("config.json", b"\xff\xfe\x00garbage\x80"), "config.json")
    imp("config.json is a directory", make_dir("config.json"), "config.json")
    imp("config.json repeats a key", write("config.json", '{"model_type": "llama", "model_type": "gpt2"}'),
        "config.json", "model_type")
    imp("config.json is null", write("config.json", "null"), "config.json")
    # config.json fields
    imp("model_type missing", cfg(model_type=_DROP), "config.json", "model_type")
    imp("model_type gpt2", cfg(model_type="gpt2"), "config.json", "model_type")
    imp("hidden_size a string", cfg(hidden_size="64"), "config.json", "hidden_size")
    imp("num_hidden_layers a string", cfg(num_hidden_layers="2"), "config.json", "num_hidden_layers")
    imp("num_hidden_layers a float", cfg(num_hidden_layers=2.5), "config.json", "num_hidden_layers")
    imp("hidden_size a boolean", cfg(hidden_size=True), "config.json", "hidden_size")
    imp("tie_word_embeddings the string 'false'", cfg(tie_word_embeddings="false"), "config.json",
        "tie_word_embeddings")
    imp("rms_norm_eps a string", cfg(rms_norm_eps="1e-6"), "config.json", "rms_norm_eps")
    imp("rope_theta a string", cfg(rope_theta="10000", rope_parameters=_DROP), "config.json", "rope_theta")
    imp("rope_parameters a list", cfg(rope_parameters=[1, 2]), "config.json", "rope_parameters")
    imp("rope_scaling a string", cfg(rope_scaling="linear"), "config.json", "rope_scaling")
    imp("rope_scaling llama3", cfg(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "config.json",
        "rope_scaling")
    imp("hidden_act gelu", cfg(hidden_act="gelu"), "config.json", "hidden_act")
    imp("vocab_size missing", cfg(vocab_size=_DROP), "config.json", "vocab_size")
    imp("num_attention_heads missing", cfg(num_attention_heads=_DROP), "config.json", "num_attention_heads")
    imp("intermediate_size missing", cfg(intermediate_size=_DROP), "config.json", "intermediate_size")
    imp("max_position_embeddings missing", cfg(max_position_embeddings=_DROP), "config.json",
        "max_position_embeddings")
    imp("hidden_size negative", cfg(hidden_size=-64), "config.json", "hidden_size")
    imp("num_hidden_layers zero", cfg(num_hidden_layers=0), "config.json", "num_hidden_layers")
    imp("num_key_value_heads 3 (does not divide 4)", cfg(num_key_value_heads=3), "config.json",
        "num_key_value_heads")
    imp("head_dim odd", cfg(head_dim=15), "config.json", "head_dim")
    imp("rms_norm_eps NaN", cfg(rms_norm_eps=math.nan), "config.json", "rms_norm_eps")
    # config.json against the tensors
    imp("hidden_size disagrees with the tensors", cfg(hidden_size=32, head_dim=16), "hidden_size")
    imp("intermediate_size disagrees with the tensors", cfg(intermediate_size=128), "intermediate_size")
    imp("vocab_size larger than the embedding", cfg(vocab_size=600), "vocab_size")
    imp("num_key_value_heads disagrees with k_proj", cfg(num_key_value_heads=4), "k_proj")
    imp("head_dim disagrees with the attention tensors", cfg(head_dim=32), "head_dim")
    imp("num_hidden_layers larger than the tensors", cfg(num_hidden_layers=3), "layers.2")
    imp("num_hidden_layers smaller than the tensors", cfg(num_hidden_layers=1), "layers.1")
    imp("tied config with a separate lm_head", cfg(tie_word_embeddings=True), "lm_head", "tie_word_embeddings")
    imp("untied config without lm_head", cfg(tie_word_embeddings=False), "lm_head", base="tied")
    # tensors
    imp("gate_proj transposed", tensors(fn=set_t("model.layers.0.mlp.gate_proj.weight", lambda t: t.t().contiguous())),
        "gate_proj")
    imp("down_proj transposed", tensors(fn=set_t("model.layers.1.mlp.down_proj.weight", lambda t: t.t().contiguous())),
        "down_proj")
    imp("q_proj truncated rows", tensors(fn=set_t("model.layers.0.self_attn.q_proj.weight", lambda t: t[:-8].clone())),
        "q_proj")
    imp("embedding truncated rows", tensors(fn=set_t("model.embed_tokens.weight", lambda t: t[:500].clone())),
        "embed_tokens")
    imp("norm weight flattened to 2-D", tensors(fn=set_t("model.norm.weight", lambda t: t.reshape(8, 8).clone())),
        "model.norm")
    imp("embedding integer weights", tensors(fn=set_t("model.embed_tokens.weight", lambda t: (t * 100).long())),
        "embed_tokens")
    imp("all weights int8", tensors(fn=lambda s: s.update({k: (v * 100).to(torch.int8) for k, v in s.items()})),
        "model.safetensors")
    imp("norm weight boolean", tensors(fn=set_t("model.norm.weight", lambda t: t > 0)), "model.norm")
    imp("NaN in a norm weight", tensors(fn=set_t("model.layers.1.input_layernorm.weight", nan_at)),
        "input_layernorm")
    imp("inf in down_proj", tensors(fn=set_t("model.layers.0.mlp.down_proj.weight", lambda t: nan_at(t, math.inf))),
        "down_proj")
    imp("NaN in fp16 weights", tensors(fn=lambda s: s.update(
        {k: (nan_at(v) if k == "lm_head.weight" else v).half() for k, v in s.items()})), "lm_head")
    imp("NaN in the tied embedding", tensors(fn=set_t("model.embed_tokens.weight", nan_at)), "embed_tokens",
        base="tied")
    imp("an attention bias tensor", tensors(fn=lambda s: s.__setitem__("model.layers.0.self_attn.q_proj.bias",
                                                                        torch.zeros(64))), "q_proj.bias")
    imp("a tensor of another architecture", tensors(fn=lambda s: s.__setitem__("transformer.h.0.attn.c_attn.weight",
                                                                                 torch.zeros(4, 4))), "transformer.h.0")
    # safetensors files
    imp("model.safetensors empty", write("model.safetensors", b""), "model.safetensors")
    imp("model.safetensors truncated", truncate("model.safetensors", drop_bytes=100), "model.safetensors")
    imp("model.safetensors truncated in its header", truncate("model.safetensors", keep_fraction=0.001),
        "model.safetensors")
    imp("model.safetensors random bytes", write("model.safetensors", os.urandom(4096)), "model.safetensors")
    imp("model.safetensors 4 bytes", write("model.safetensors", b"\x01\x02\x03\x04"), "model.safetensors")
    imp("model.safetensors header not JSON", header(raw=b"{not json" + b" " * 7), "model.safetensors")
    imp("model.safetensors header a list", header(raw=b"[1, 2, 3]"), "model.safetensors")
    imp("model.safetensors wrong byte count in header",
        header(fn=lambda h: h["model.norm.weight"].__setitem__("shape", [32])), "model.safetensors")
    imp("model.safetensors junk appended", append("model.safetensors", b"\x00" * 64), "model.safetensors")
    imp("model.safetensors is a directory", make_dir("model.safetensors"), "model.safetensors")
    imp("model.safetensors missing", remove("model.safetensors"), "model.safetensors")
    imp("only pytorch_model.bin", pytorch_bin_only, "pytorch_model.bin")
    # shard index
    imp("index names ../outside.safetensors", outside_shard, "index.json", "../outside.safetensors",
        base="sharded")
    imp("index names an absolute path", absolute_shard, "index.json", base="sharded")
    imp("index without weight_map", index(lambda raw: {"metadata": {}}), "index.json", "weight_map", base="sharded")
    imp("index is a list", write("model.safetensors.index.json", "[]"), "index.json", base="sharded")
    imp("index weight_map a list", index(lambda raw: {"weight_map": list(raw["weight_map"])}), "index.json",
        "weight_map", base="sharded")
    imp("index weight_map value a number", index(lambda raw: raw["weight_map"].__setitem__("model.norm.weight", 3)),
        "index.json", "model.norm.weight", base="sharded")
    imp("index empty file", write("model.safetensors.index.json", ""), "index.json", base="sharded")
    imp("index corrupt JSON", truncate("model.safetensors.index.json", 0.5), "index.json", base="sharded")
    imp("index names a missing shard", lambda d: (d / shard_names(d)[0]).unlink(), "safetensors", base="sharded")
    imp("index maps a tensor to the wrong shard", move_tensor_to_other_shard, "index.json", base="sharded")
    imp("index lists a tensor no shard holds",
        index(lambda raw: raw["weight_map"].__setitem__("model.layers.0.mlp.up_proj.weight_x",
                                                        sorted(set(raw["weight_map"].values()))[0])),
        "index.json", "up_proj.weight_x", base="sharded")
    imp("a shard holds a tensor the index does not list", extra_in_shard, "q_proj.bias", base="sharded")
    imp("a tensor in two shards", duplicate_in_two_shards, "safetensors", base="sharded")
    imp("model.safetensors beside an index", both_single_and_index, "model.safetensors", base="hf")
    imp("a shard truncated", lambda d: truncate(shard_names(d)[-1], drop_bytes=10)(d), "safetensors",
        base="sharded")
    # tokenizer
    imp("tokenizer.json missing", remove("tokenizer.json"), "tokenizer.json")
    imp("tokenizer.json empty", write("tokenizer.json", ""), "tokenizer.json")
    imp("tokenizer.json corrupt", truncate("tokenizer.json", 0.5), "tokenizer.json")
    imp("tokenizer.json larger than vocab_size", cfg(vocab_size=256), "vocab_size")

    # export: our checkpoint and stage directories
    exp("model.pt truncated", truncate("model.pt", 0.5), "model.pt")
    exp("model.pt empty", write("model.pt", b""), "model.pt")
    exp("model.pt random bytes", write("model.pt", os.urandom(2048)), "model.pt")
    exp("model.pt crafted pickle", crafted, "model.pt")
    exp("model.pt is a list", pt(lambda s: list(s.values())), "model.pt")
    exp("model.pt nested under 'model'", pt(lambda s: {"model": s}), "model.pt")
    exp("model.pt NaN weights", pt(set_t("layers.0.attn.wq.weight", nan_at)), "model.pt", "layers.0.attn.wq")
    exp("model.pt integer weights", pt(set_t("norm.weight", lambda t: t.long())), "model.pt", "norm.weight")
    exp("model.pt missing a tensor", pt(lambda s: [s.pop("layers.1.mlp.w_up.weight"), None][1]), "model.pt",
        "layers.1.mlp.w_up")
    exp("model.pt wrong shape", pt(set_t("layers.1.mlp.w_up.weight", lambda t: t[:-1].clone())), "model.pt",
        "layers.1.mlp.w_up")
    exp("model.pt is a directory", make_dir("model.pt"), "model.pt")
    exp("config.yaml is a list", write("config.yaml", "- 1\n- 2\n"), "config.yaml")
    exp("config.yaml corrupt", write("config.yaml", "model: [unclosed\n"), "config.yaml")
    exp("config.yaml model a string", write("config.yaml", "model: tiny\n"), "config.yaml", "model")
    exp("stage.json is a list", stage_json("[]"), "stage.json", base="stage")
    exp("stage.json corrupt", truncate("stage.json", 0.5), "stage.json", base="stage")
    exp("stage.json without model", lambda d: (d / "stage.json").write_text(
        json.dumps({k: v for k, v in json.loads((d / "stage.json").read_text()).items() if k != "model"})),
        "stage.json", "model", base="stage")
    exp("stage.json model a list", lambda d: (d / "stage.json").write_text(
        json.dumps({**json.loads((d / "stage.json").read_text()), "model": [1]})), "stage.json", "model",
        base="stage")

    # evaluate: a Hugging Face directory and our checkpoints
    ev("evaluate: NaN weights in an HF dir", tensors(fn=set_t("model.norm.weight", nan_at)), "model.norm")
    ev("evaluate: HF config disagrees with tensors", cfg(intermediate_size=128), "intermediate_size")
    ev("evaluate: corrupt model.safetensors", truncate("model.safetensors", drop_bytes=100), "model.safetensors")
    ev("evaluate: config.json a list", write("config.json", "[]"), "config.json")
    ev("evaluate: tied config with a separate lm_head", cfg(tie_word_embeddings=True), "lm_head")
    ev("evaluate: index outside the directory", outside_shard, "index.json", base="sharded")
    ev("evaluate: truncated model.pt", truncate("model.pt", 0.5), "model.pt", base="ckpt")
    ev("evaluate: NaN model.pt", pt(set_t("norm.weight", nan_at)), "model.pt", "norm.weight", base="ckpt")
    ev("evaluate: crafted model.pt", crafted, "model.pt", base="ckpt")
    ev("evaluate: integer model.pt", pt(set_t("norm.weight", lambda t: t.long())), "norm.weight", base="ckpt")
    return C


# ---------------------------------------------------------------- running them

def prepare(work: Path, root: Path) -> dict[str, Path]:
    """The valid inputs every case starts from."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(HERE))
    from data_pipeline.hf_tokenizer import save_hf_tokenizer
    from tests.parallel.launcher_utils import prepare_tiny_data

    data = prepare_tiny_data(work / "data")
    out = {}
    for name, tied, shard in (("hf", False, None), ("sharded", False, "60KB"), ("tied", True, None)):
        config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                             rms_norm_eps=1e-6, tie_word_embeddings=tied, bos_token_id=2, eos_token_id=3,
                             pad_token_id=0)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        d = work / name
        model.save_pretrained(d, **({"max_shard_size": shard} if shard else {}))
        save_hf_tokenizer(data["tokenizer"], d)
        out[name] = d
    assert (out["sharded"] / "model.safetensors.index.json").is_file(), "the sharded control did not shard"
    r = subprocess.run([sys.executable, str(root / "launch/import_hf.py"), str(out["hf"]), str(work / "imported")],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    out["ckpt"] = work / "imported" / "step_00000000"
    # An alignment stage directory as llm/align/handoff.py writes it: model.pt, tokenizer.json, stage.json.
    stage = work / "stage"
    stage.mkdir()
    shutil.copyfile(out["ckpt"] / "model.pt", stage / "model.pt")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (out["ckpt"] / f).is_file():
            shutil.copyfile(out["ckpt"] / f, stage / f)
    import yaml
    model_section = yaml.safe_load((out["ckpt"] / "config.yaml").read_text())["model"]
    (stage / "stage.json").write_text(json.dumps({"kind": "lm", "stage": "sft", "model": model_section}))
    out["stage"] = stage
    return out


ENTRY_FILES = {"import": "launch/import_hf.py", "export": "launch/export_hf.py", "eval": "launch/evaluate.py"}


def case_argv(case: Case, src: Path, out: Path) -> list[str]:
    if case.entry == "eval":
        return ["--checkpoint", str(src), "--tasks", "python_docs_ppl", "--limit", "2", "--batch-size", "2",
                "--device", "cpu"]
    return [str(src), str(out)]


def worker(root: Path, entry: str, jobs_file: Path) -> int:
    """Run each job's `main(argv)` of one entry point in this process (one torch/transformers import for all its
    cases: a subprocess per case costs ~8 CPU-s), as the script's `sys.exit(main())` would: the exit code, the
    output, and an uncaught exception's traceback."""
    import contextlib
    import importlib.util
    import io
    import traceback

    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(f"entry_{entry}", root / ENTRY_FILES[entry])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A checkout with launch/cli.py ends every command through it (`run(main)`): a user error leaves main() as an
    # exception that the wrapper prints as one line; older checkouts return the code from main() themselves.
    call = module.main
    if (root / "launch" / "cli.py").is_file():
        from launch.cli import call as cli_call

        def call(argv):
            return cli_call(module.main, argv)
    results = []
    for job in json.loads(jobs_file.read_text()):
        buf = io.StringIO()
        os.chdir(job["cwd"])
        saved_env = dict(os.environ)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = call(job["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                rc = 1
        os.environ.clear()
        os.environ.update(saved_env)
        results.append({"rc": rc or 0, "text": buf.getvalue()})
    jobs_file.with_suffix(".out.json").write_text(json.dumps(results))
    return 0


def classify(case: Case, rc: int, text: str, out: Path, case_dir: Path) -> dict:
    errors = [ln for ln in text.splitlines() if ln.startswith(("error:", "config error:"))]
    if rc == 0:
        outcome = "ok" if case.control else "silent"
    elif case.control:
        outcome = "refused"
    elif "Traceback" in text:
        outcome = "traceback"
    elif not errors or not all(m in errors[0] for m in case.must_name):
        outcome = "late"
    elif case.entry != "eval" and out.exists() and any(out.rglob("*")):
        outcome = "late"  # refused, but only after writing the output directory
    else:
        outcome = "clear"
    if outcome == "traceback":
        shown = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    else:
        shown = errors[0] if errors else ([ln for ln in text.strip().splitlines() if ln.strip()] or [""])[-1]
    return {"case": case.name, "entry": case.entry, "outcome": outcome, "exit": rc,
            "line": shown[:300].replace(str(case_dir), "CASE")}


def run_entry(entry: str, selected: list[Case], bases: dict[str, Path], work: Path, root: Path) -> list[dict]:
    """Prepare every case of one entry point, run them in one worker subprocess, classify."""
    prepared, jobs = [], []
    for case in selected:
        case_dir = Path(tempfile.mkdtemp(prefix="case_", dir=work))
        src = case_dir / "in"
        shutil.copytree(bases[case.base], src, symlinks=True)
        if case.breaks is not None:
            case.breaks(src)
        prepared.append((case, case_dir, case_dir / "out"))
        jobs.append({"argv": case_argv(case, src, case_dir / "out"), "cwd": str(case_dir)})
    jobs_file = work / f"jobs_{entry}.json"
    jobs_file.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(root), DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", entry, str(jobs_file),
                        "--root", str(root)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"the {entry} worker failed:\n{r.stderr[-3000:]}")
    outs = json.loads(jobs_file.with_suffix(".out.json").read_text())
    return [classify(case, o["rc"], o["text"], out, case_dir) for (case, case_dir, out), o in zip(prepared, outs)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=HERE, help="the checkout whose entry points run (default: this one)")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--entry", choices=sorted(ENTRY_FILES), action="append", help="run only this entry point's cases")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="write the outcomes as JSON")
    ap.add_argument("--worker", nargs=2, metavar=("ENTRY", "JOBS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.root.resolve(), args.worker[0], Path(args.worker[1]))
    selected = [c for c in cases()
                if (not args.only or args.only in c.name) and (not args.entry or c.entry in args.entry)]
    with tempfile.TemporaryDirectory(prefix="hf_hardening_") as tmp:
        work = Path(tmp)
        bases = prepare(work, args.root.resolve())
        entries = sorted({c.entry for c in selected})
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            parts = dict(zip(entries, pool.map(lambda e: run_entry(e, [c for c in selected if c.entry == e], bases,
                                                                    work, args.root.resolve()), entries)))
        results = [parts[e][i] for e in entries for i in range(len(parts[e]))]
    counts: dict[str, int] = {}
    for res in results:
        counts[res["outcome"]] = counts.get(res["outcome"], 0) + 1
        print(f"{res['outcome']:<9} {res['entry']:<6} {res['case']:<52} {res['line'][:160]}")
    print(f"{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.out:
        args.out.write_text(json.dumps({"root": str(args.root), "counts": counts, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
