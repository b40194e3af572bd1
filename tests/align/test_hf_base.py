"""The chain from a Hugging Face model directory: `base.path` naming a LlamaForCausalLM `save_pretrained` directory
with its tokenizer (a byte-level BPE `tokenizer.json`, not SentencePiece), both built here at random.

The base stage imports the weights through llm/hf; SFT, DPO and GRPO run from it for a few steps on the bundled
task; every stage directory carries the HF tokenizer on (stage.json records its kind), the chat template encodes
with it, and an exported stage loads in transformers with logits equal to ours.
"""
import json
import shutil

import pytest
import torch

from data_pipeline.hf_tokenizer import HFTokenizer
from llm.align import handoff
from llm.align.config import load_align_config
from tests.align.helpers import console_lines
from tests.conftest import ROOT
from tests.llm.hf.helpers import LOGITS_ATOL

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

RECIPE = ROOT / "configs" / "align" / "default.yaml"
TEXT = "sort 90817: 01789"


def _bpe_tokenizer():
    """A byte-level BPE trained on a few task-like lines, as transformers' PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    lines = ["sort 5183: 1358", "sort 209: 029", "sort 74612: 12467", "sort 3590: 0359", "hello world"] * 4
    backend.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def make_hf_base(path, **tokenizer_kwargs):
    """A random-init LlamaForCausalLM (vocab rounded up past the tokenizer's, as real models do) and its tokenizer
    saved together in `path`."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = _bpe_tokenizer()
    config = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48, rms_norm_eps=1e-6,
                         tie_word_embeddings=False, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def chain_from_hf(tmp_path_factory):
    from llm.align.chain import run_chain
    tmp = tmp_path_factory.mktemp("hf_base")
    hf = make_hf_base(tmp / "hf")
    torch.set_num_threads(1)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp / 'out'}", f"base.path={hf}", "stages=[base,sft,dpo,grpo_rloo]",
                                     "task.n_train=200", "task.n_dev=20", "task.n_eval_prompts=16",
                                     "sft.steps=4", "sft.batch_size=8", "sft.eval_every=0", "sft.optim.warmup_steps=0",
                                     "dpo.steps=2",
                                     "dpo.batch_size=4", "grpo_rloo.iterations=2", "grpo_rloo.prompts_per_iteration=2",
                                     "grpo_rloo.group_size=4", "grpo_rloo.mini_batch=8"])
    with console_lines() as lines:
        report = run_chain(cfg)
    return hf, tmp / "out", report, lines


def test_every_stage_carries_the_hf_tokenizer(chain_from_hf):
    from transformers import AutoTokenizer
    from llm.align.handoff import checkpoint_tokenizer
    hf, out, report, lines = chain_from_hf
    assert report["stages"]["base"]["imported_from"] == str(hf) and any("base: imported" in s for s in lines)
    original = HFTokenizer(hf)
    reference = AutoTokenizer.from_pretrained(str(hf))
    for stage in ("base", "sft", "dpo", "grpo_rloo"):
        info = handoff.read_info(out / stage)
        assert info.tokenizer == "hf" and not (out / stage / "tokenizer.model").exists(), stage
        assert info.tokenizer_fingerprint == original.fingerprint() and info.vocab_size == original.vocab_size
        tok = checkpoint_tokenizer(out / stage)
        assert (tok.bos_id, tok.eos_id, tok.pad_id) == (reference.bos_token_id, reference.eos_token_id,
                                                        reference.pad_token_id)
        ids = tok.encode(TEXT)
        assert ids == reference.encode(TEXT, add_special_tokens=False) and tok.decode(ids) == TEXT
        # transformers reads the stage's tokenizer files as they were saved.
        again = AutoTokenizer.from_pretrained(str(out / stage))
        assert again.encode(TEXT, add_special_tokens=False) == ids and again.eos_token == reference.eos_token
        model, _ = handoff.load_stage(out / stage, "lm", tokenizer_fingerprint=original.fingerprint())
        assert model.cfg.vocab_size == 320
    for stage in ("base", "sft", "dpo", "grpo_rloo"):
        assert 0.0 <= report["stages"][stage]["eval_reward"] <= 1.0, stage
    assert report["stages"]["grpo_rloo"]["last_train_row"]["step"] == 2


def test_the_imported_base_holds_the_hf_weights(chain_from_hf):
    from llm.hf.load import read_hf_weights
    hf, out, _, _ = chain_from_hf
    ours = torch.load(out / "base" / "model.pt", weights_only=True)
    theirs = read_hf_weights(hf)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_chat_template_round_trip_with_the_hf_tokenizer(chain_from_hf):
    from llm.align.handoff import checkpoint_tokenizer
    from llm.align.losses import IGNORE_INDEX
    from llm.align.template import ChatTemplate
    _, out, _, _ = chain_from_hf
    tok = checkpoint_tokenizer(out / "sft")
    template = ChatTemplate(system="[{content}]", user="sort {content}:", assistant=" {content}.")
    messages = [{"role": "system", "content": "digits"}, {"role": "user", "content": "5183"},
                {"role": "assistant", "content": "1358"}]
    tokens, targets = template.encode(tok, messages)
    assert tokens[-1] == tok.eos_id and tok.decode(tokens) == "[digits]sort 5183: 1358."
    trained = [t for t in targets if t != IGNORE_INDEX]
    prompt = template.encode_prompt(tok, messages[:2])
    assert tokens[:len(prompt)] == prompt and trained == tokens[len(prompt):]
    assert template.decode_response(tok, tokens[len(prompt):]) == "1358"
    # Ids the embedding table has past the tokenizer's vocabulary are not dropped: they decode as U+FFFD.
    assert template.decode_response(tok, [tok.encode("13")[0], 310, *tok.encode("58")]).count("\ufffd") == 1


def test_an_exported_stage_loads_in_transformers(chain_from_hf, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM
    from llm.hf.export import export_hf
    _, out, _, _ = chain_from_hf
    export_hf(out / "sft", tmp_path / "export")
    hf_model = LlamaForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
    ours, _ = handoff.load_stage(out / "sft", "lm")
    tokens = torch.tensor([AutoTokenizer.from_pretrained(str(tmp_path / "export")).encode(TEXT)])
    with torch.no_grad():
        assert (ours.eval()(tokens) - hf_model(input_ids=tokens).logits).abs().max().item() < LOGITS_ATOL


def test_a_step_directory_imported_from_hf_keeps_its_tokenizer(tmp_path):
    """launch/import_hf.py's step directory (its data.tokenizer a tokenizer.json) as base.path."""
    from llm.align.base_stage import run_base
    from llm.hf.import_ import import_hf
    hf = make_hf_base(tmp_path / "hf")
    step = import_hf(hf, tmp_path / "imported")
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path / 'out'}", f"base.path={step}", "task.n_train=50",
                                     "task.n_dev=10", "task.n_eval_prompts=8"])
    run_base(cfg)
    info = handoff.read_info(tmp_path / "out" / "base")
    assert info.tokenizer == "hf" and info.tokenizer_fingerprint == HFTokenizer(hf).fingerprint()
    assert info.metrics["imported_from"] == str(step)


def test_bundled_from_hf_recipe(tmp_path):
    from llm.align.base_stage import run_base
    hf = make_hf_base(tmp_path / "hf")
    cfg = load_align_config(ROOT / "configs" / "align" / "from_hf.yaml",
                            [f"out_dir={tmp_path / 'out'}", f"base.path={hf}", "task.n_train=50", "task.n_dev=10",
                             "task.n_eval_prompts=8"])
    assert cfg.stages == ["base", "sft", "grpo_rloo"] and cfg.grpo_rloo.algorithm == "grpo"
    assert 0.0 <= run_base(cfg)["eval_reward"] <= 1.0


def _chain_cli(capsys, tmp_path, base):
    from launch import chain, cli
    capsys.readouterr()  # what building the directories printed
    rc = cli.call(chain.main, ["--config", str(RECIPE), f"out_dir={tmp_path / 'out'}", f"base.path={base}",
                               "stages=[base]"])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_a_bad_hf_directory_is_one_clear_line(tmp_path, capsys):
    hf = make_hf_base(tmp_path / "hf")
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(hf, no_tok)
    (no_tok / "tokenizer.json").unlink()
    no_eos = tmp_path / "no_eos"
    shutil.copytree(hf, no_eos)
    for name in ("tokenizer_config.json", "config.json"):
        raw = json.loads((no_eos / name).read_text())
        raw.pop("eos_token" if name == "tokenizer_config.json" else "eos_token_id")
        (no_eos / name).write_text(json.dumps(raw))
    eos_in_config_only = tmp_path / "eos_in_config_only"
    shutil.copytree(hf, eos_in_config_only)
    raw = json.loads((eos_in_config_only / "tokenizer_config.json").read_text())
    raw.pop("eos_token")
    (eos_in_config_only / "tokenizer_config.json").write_text(json.dumps(raw))
    biased = tmp_path / "biased"
    shutil.copytree(hf, biased)
    raw = json.loads((biased / "config.json").read_text())
    (biased / "config.json").write_text(json.dumps({**raw, "attention_bias": True}))
    no_weights = tmp_path / "no_weights"
    shutil.copytree(hf, no_weights)
    (no_weights / "model.safetensors").unlink()
    for base, expected in ((no_tok, "no_tokenizer: no tokenizer.json; save the tokenizer"),
                           (no_eos, "has no EOS token"), (biased, "attention_bias"),
                           (eos_in_config_only, "come partly from a config.json"),
                           (no_weights, "nor a Hugging Face model directory")):
        rc, err = _chain_cli(capsys, tmp_path, base)
        assert rc == 4 and err.startswith("hand-off error: ") and len(err.splitlines()) == 1, err
        assert expected in err, err
        assert not (tmp_path / "out" / "base").exists()
