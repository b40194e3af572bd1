"""The exported tokenizer (tokenizer.json through transformers' AutoTokenizer) against our SentencePiece model on
every line and every document of the bundled corpus."""
from __future__ import annotations

import json

import pytest

from data_pipeline.errors import DataError
from data_pipeline.hf_tokenizer import HFTokenizer, load_tokenizer, save_hf_tokenizer
from tests.data_pipeline.tiny_data import _texts
from data_pipeline.tokenizer import Tokenizer, train_tokenizer
from tests.parallel.launcher_utils import CORPUS


@pytest.fixture(scope="module")
def corpus():
    docs = list(_texts([CORPUS]))
    return docs, [line for d in docs for line in d.splitlines()]


def _exported(spm_path, tmp_path):
    from transformers import AutoTokenizer
    save_hf_tokenizer(spm_path, tmp_path / "hf")
    return AutoTokenizer.from_pretrained(tmp_path / "hf")


def test_every_line_and_document_agrees(tiny_data, corpus, tmp_path):
    docs, lines = corpus
    sp = Tokenizer(tiny_data["tokenizer"])
    hf = _exported(tiny_data["tokenizer"], tmp_path)
    spaced = [line for line in lines if line.startswith(" ")]
    assert len(spaced) > 50_000  # the lines transformers' own Llama conversion gets wrong (its Metaspace)
    for texts in (lines, docs):
        ref = sp.encode_batch(texts)
        got = hf(texts, add_special_tokens=True)["input_ids"]  # add_special_tokens: still no BOS, as ours
        agree = sum(a == b for a, b in zip(ref, got))
        assert agree == len(texts), f"{len(texts) - agree} of {len(texts)} disagree"
    assert all(hf.decode(ids) == d for ids, d in zip(sp.encode_batch(docs), docs))


def test_edge_strings_and_special_pieces_as_text(tiny_data, tmp_path):
    sp, hf = Tokenizer(tiny_data["tokenizer"]), _exported(tiny_data["tokenizer"], tmp_path)
    sample = ["", " ", "  x", "\n\n", "<s></s><pad><unk>", "é😀\t 123", "\u00a0x"]
    assert hf(sample)["input_ids"] == sp.encode_batch(sample)
    assert [hf.decode(ids) for ids in sp.encode_batch(sample)] == sample


def test_models_it_cannot_reproduce_are_refused(corpus, tmp_path):
    path = train_tokenizer(corpus[0][:50], tmp_path / "uni", 400, model_type="unigram")
    with pytest.raises(ValueError, match="unigram"):
        save_hf_tokenizer(path, tmp_path / "hf")


def test_hf_tokenizer_interface(tiny_data, corpus, tmp_path):
    sp = Tokenizer(tiny_data["tokenizer"])
    save_hf_tokenizer(tiny_data["tokenizer"], tmp_path / "hf")
    hf = load_tokenizer(tmp_path / "hf")
    assert isinstance(hf, HFTokenizer) and isinstance(load_tokenizer(tiny_data["tokenizer"]), Tokenizer)
    assert (hf.vocab_size, hf.bos_id, hf.eos_id, hf.pad_id) == (sp.vocab_size, 2, 3, 0)
    text = corpus[0][0]
    assert hf.encode(text) == sp.encode(text) and hf.decode(hf.encode(text)) == text
    assert hf.encode_batch(corpus[1][:50]) == sp.encode_batch(corpus[1][:50])
    assert hf.fingerprint() == HFTokenizer(tmp_path / "hf" / "tokenizer.json").fingerprint()
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(config))
    assert HFTokenizer(tmp_path / "hf").pad_id == -1
    with pytest.raises(DataError, match="no tokenizer.json nor tokenizer.model"):
        load_tokenizer(tmp_path)
