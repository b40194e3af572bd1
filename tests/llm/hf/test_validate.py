"""A Hugging Face directory is checked tensor by tensor against its config.json before anything is written
(llm/hf/validate.py through llm/hf/load.py), on every path that reads one: launch/import_hf.py, the alignment chain's
base.path, evaluation; model.pt is checked the same way by export and evaluation. Each refusal is one line naming
the file and the key or tensor, exit 2, nothing written. Random-init LlamaForCausalLM models built here."""
from __future__ import annotations

import json
import math

import pytest
import torch

from launch import cli
from launch.export_hf import main as export_main
from launch.import_hf import main as import_main
from llm.config import ConfigError
from llm.hf.validate import expected_shapes
from llm.model import Transformer
from tests.llm.hf.test_import import SHAPES, make_hf_model
from tests.safety_utils import Payload


@pytest.fixture(scope="module")
def hf_dirs(tiny_data, tmp_path_factory):
    """{"hf": untied single-file, "sharded": the same with an index, "tied": tied}, and an imported checkpoint."""
    root = tmp_path_factory.mktemp("hf_validate")
    make_hf_model(root / "hf", tiny_data["tokenizer"], **dict(SHAPES["gqa"]))
    make_hf_model(root / "tied", tiny_data["tokenizer"], **dict(SHAPES["tied_wide_heads"]))
    from transformers import LlamaForCausalLM
    LlamaForCausalLM.from_pretrained(root / "hf").save_pretrained(root / "sharded", max_shard_size="60KB")
    for f in (root / "hf").glob("tokenizer*"):
        (root / "sharded" / f.name).write_bytes(f.read_bytes())
    assert (root / "sharded/model.safetensors.index.json").is_file()
    assert cli.call(import_main, [str(root / "hf"), str(root / "imported")]) == 0
    return {"hf": root / "hf", "sharded": root / "sharded", "tied": root / "tied",
            "ckpt": root / "imported" / "step_00000000"}


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _edit_tensors(d, fn, name="model.safetensors"):
    from safetensors.torch import load_file, save_file
    state = load_file(str(d / name))
    fn(state)
    save_file(state, str(d / name), metadata={"format": "pt"})


def _edit_config(d, **kv):
    raw = json.loads((d / "config.json").read_text())
    raw.update(kv)
    (d / "config.json").write_text(json.dumps(raw))


def _nan(t):
    t = t.clone()
    t.view(-1)[3] = math.nan
    return t


def _outside(d):
    index = json.loads((d / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (d.parent / "x.safetensors").write_bytes((d / first).read_bytes())
    (d / first).unlink()
    index["weight_map"] = {k: "../x.safetensors" if v == first else v for k, v in index["weight_map"].items()}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Writing model shards" not in ln]
    assert len(err) == 1 and err[0].startswith("config error: ") and "Traceback" not in err[0], err
    return err[0]


def test_expected_shapes_are_the_models():
    """The shapes the checks demand are exactly llm/model.py's, for GQA, wide heads, tied embeddings and MoE (every
    block; every other block, with shared experts)."""
    from llm.config import ModelConfig
    from llm.config.model import MoEConfig
    for cfg in (ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=512, seq_len=32),
                ModelConfig(n_layers=1, d_model=48, n_heads=4, head_dim=16, d_ff=80, vocab_size=300, seq_len=16,
                            tie_embeddings=True),
                ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=128, seq_len=16,
                            moe=MoEConfig(experts=4, top_k=2, expert_d_ff=24)),
                ModelConfig(n_layers=2, d_model=32, n_heads=4, d_ff=64, vocab_size=128, seq_len=16,
                            moe=MoEConfig(experts=4, top_k=1, every_k_layers=2, shared_experts=2))):
        model = {k: tuple(v.shape) for k, v in Transformer(cfg).state_dict().items()}
        assert model == {k: shape for k, (shape, _) in expected_shapes(cfg).items()}


def test_file_readers_name_the_file_and_the_key(tmp_path):
    """typed_yaml/files.py, llm/files.py: a repeated JSON key (json keeps the last silently) and bytes a safetensors
    header does not account for are refused, naming the file; a valid file reads back."""
    from safetensors.torch import save_file

    from llm.files import read_safetensors, safetensors_header
    from typed_yaml.files import read_json
    (tmp_path / "c.json").write_text('{"vocab_size": 512, "vocab_size": 600}')
    with pytest.raises(ConfigError, match=r"c\.json: key 'vocab_size' appears twice"):
        read_json(tmp_path / "c.json")
    save_file({"a": torch.ones(3, 2), "b": torch.zeros(4, dtype=torch.bfloat16)}, str(tmp_path / "w.safetensors"))
    assert {k: (e.dtype, e.shape) for k, e in safetensors_header(tmp_path / "w.safetensors").items()} == \
        {"a": ("F32", (3, 2)), "b": ("BF16", (4,))}
    assert torch.equal(dict(read_safetensors(tmp_path / "w.safetensors"))["a"], torch.ones(3, 2))
    with open(tmp_path / "w.safetensors", "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ConfigError, match=r"w\.safetensors: its header accounts for 32 bytes .* holds 40"):
        safetensors_header(tmp_path / "w.safetensors")


# (case, which directory, how it is broken, what the one line must name)
IMPORT_CASES = [
    ("ffn size disagrees", "hf", lambda d: _edit_config(d, intermediate_size=128),
     ["model.safetensors", "down_proj", "intermediate_size"]),
    ("vocabulary larger than the embedding", "hf", lambda d: _edit_config(d, vocab_size=600),
     ["model.safetensors", "vocab_size", "[600, 64]"]),
    ("transposed", "hf", lambda d: _edit_tensors(d, lambda s: s.update(
        {"model.layers.0.mlp.gate_proj.weight": s["model.layers.0.mlp.gate_proj.weight"].t().contiguous()})),
     ["gate_proj", "transposed"]),
    ("integer weights", "hf", lambda d: _edit_tensors(d, lambda s: s.update(
        {"model.embed_tokens.weight": (s["model.embed_tokens.weight"] * 100).long()})), ["embed_tokens", "I64"]),
    ("NaN", "hf", lambda d: _edit_tensors(d, lambda s: s.update(
        {"model.layers.1.input_layernorm.weight": _nan(s["model.layers.1.input_layernorm.weight"])})),
     ["model.safetensors", "layers.1.input_layernorm", "NaN"]),
    ("tied config, separate lm_head", "hf", lambda d: _edit_config(d, tie_word_embeddings=True),
     ["config.json", "tie_word_embeddings", "lm_head"]),
    ("index names a file outside", "sharded", _outside, ["model.safetensors.index.json", "../x.safetensors"]),
    ("truncated safetensors", "hf", lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:-100]), ["model.safetensors", "truncated"]),
    ("empty safetensors", "hf", lambda d: (d / "model.safetensors").write_bytes(b""), ["model.safetensors", "empty"]),
    ("config.json a list", "hf", lambda d: (d / "config.json").write_text("[]"), ["config.json", "a list"]),
    ("string-typed field", "hf", lambda d: _edit_config(d, hidden_size="64"), ["config.json", "hidden_size='64'"]),
    ("index without weight_map", "sharded", lambda d: (d / "model.safetensors.index.json").write_text("{}"),
     ["model.safetensors.index.json", "weight_map"]),
]


@pytest.mark.parametrize("case, base, breaks, names", IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_import_refuses_in_one_line_before_writing(case, base, breaks, names, hf_dirs, tmp_path, capsys):
    src = _copy(hf_dirs[base], tmp_path / "in")
    breaks(src)
    capsys.readouterr()
    assert cli.call(import_main, [str(src), str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert all(n in line for n in names), line
    assert not (tmp_path / "out").exists()


def test_valid_variants_still_import(hf_dirs, tmp_path):
    """A tied model that stores its lm_head as a copy of the embedding, and a sharded model whose shard is a symlink
    into a blob store beside it (the hub cache's layout), are valid."""
    tied = _copy(hf_dirs["tied"], tmp_path / "tied")
    _edit_tensors(tied, lambda s: s.update({"lm_head.weight": s["model.embed_tokens.weight"].clone()}))
    assert cli.call(import_main, [str(tied), str(tmp_path / "out_tied")]) == 0
    sharded = _copy(hf_dirs["sharded"], tmp_path / "snap" / "sharded")
    (tmp_path / "blobs").mkdir()
    shard = sorted(sharded.glob("*.safetensors"))[0]
    shard.rename(tmp_path / "blobs" / "sha")
    shard.symlink_to(tmp_path / "blobs" / "sha")
    assert cli.call(import_main, [str(sharded), str(tmp_path / "out_sharded")]) == 0


def test_alignment_base_from_an_hf_directory_gets_the_same_checks(hf_dirs, tmp_path):
    from llm.align.handoff import HandoffError
    from llm.align.base_stage import load_pretrained
    src = _copy(hf_dirs["hf"], tmp_path / "in")
    _edit_tensors(src, lambda s: s.update({"model.norm.weight": _nan(s["model.norm.weight"])}))
    with pytest.raises(HandoffError, match=r"model\.safetensors: tensor model\.norm\.weight holds 1 NaN"):
        load_pretrained(src)


def test_evaluation_refuses_nan_weights(hf_dirs, tmp_path):
    """Neither an HF directory nor a model.pt with a NaN weight is scored."""
    from llm.eval.checkpoint import load_eval_model
    src = _copy(hf_dirs["hf"], tmp_path / "hf")
    _edit_tensors(src, lambda s: s.update({"lm_head.weight": _nan(s["lm_head.weight"])}))
    with pytest.raises(ConfigError, match="tensor lm_head.weight holds 1 NaN"):
        load_eval_model(src)
    ckpt = _copy(hf_dirs["ckpt"], tmp_path / "ckpt")
    state = torch.load(ckpt / "model.pt", weights_only=True)
    state["norm.weight"] = _nan(state["norm.weight"])
    torch.save(state, ckpt / "model.pt")
    with pytest.raises(ConfigError, match=r"model\.pt: tensor norm\.weight holds 1 NaN"):
        load_eval_model(ckpt)


def _truncate(ckpt):
    data = (ckpt / "model.pt").read_bytes()
    (ckpt / "model.pt").write_bytes(data[: len(data) // 2])


def _crafted(ckpt):
    state = torch.load(ckpt / "model.pt", weights_only=True)
    state["__extra__"] = Payload(ckpt.parent / "ran")
    torch.save(state, ckpt / "model.pt")


def _shape(ckpt):
    state = torch.load(ckpt / "model.pt", weights_only=True)
    state["layers.1.mlp.w_up.weight"] = state["layers.1.mlp.w_up.weight"][:-1].clone()
    torch.save(state, ckpt / "model.pt")


EXPORT_CASES = [
    ("truncated model.pt", _truncate, ["model.pt", "not a readable torch.save archive"]),
    ("crafted model.pt", _crafted, ["model.pt", "builtins.exec"]),
    ("wrong shape", _shape, ["model.pt", "layers.1.mlp.w_up.weight", "d_ff"]),
    ("stage.json corrupt", lambda c: ((c / "stage.json").write_text('{"kind": "lm", "model": {'),
                                      (c / "config.yaml").unlink()), ["stage.json", "not valid JSON"]),
]


@pytest.mark.parametrize("case, breaks, names", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_export_refuses_a_corrupt_checkpoint_in_one_line(case, breaks, names, hf_dirs, tmp_path, capsys):
    ckpt = _copy(hf_dirs["ckpt"], tmp_path / "ckpt")
    breaks(ckpt)
    capsys.readouterr()
    assert cli.call(export_main, [str(ckpt), str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert all(n in line for n in names), line
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()
