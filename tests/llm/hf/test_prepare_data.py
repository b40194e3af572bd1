"""prepare_data.py --tokenizer HF_DIR: a corpus tokenized with a Hugging Face tokenizer.json for continued
pretraining."""
from __future__ import annotations

import json

from data_pipeline.hf_tokenizer import save_hf_tokenizer
from tests.data_pipeline.test_pipeline import make_inputs, prepare
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_hf_tokenizer_directory_gives_the_same_dataset_as_its_sentencepiece_model(tmp_path):
    inputs, _ = make_inputs(tmp_path)
    prepare(inputs, tmp_path / "spm", "reader.on_error=skip")
    save_hf_tokenizer(tmp_path / "spm" / "tokenizer.model", tmp_path / "hf_model")
    prepare(inputs, tmp_path / "hf", "reader.on_error=skip", "--tokenizer", str(tmp_path / "hf_model"))
    assert (tmp_path / "hf" / "tokenizer.json").is_file() and not (tmp_path / "hf" / "tokenizer.model").exists()
    for name in ("data.bin", "data.idx"):
        assert (tmp_path / "hf" / name).read_bytes() == (tmp_path / "spm" / name).read_bytes(), name
    report = json.loads((tmp_path / "hf" / "report.json").read_text())
    assert report["tokenizer"]["eod_id"] == 3 and report["tokenizer"]["vocab_size"] == 400
