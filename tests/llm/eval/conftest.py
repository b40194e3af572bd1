"""A small random-init checkpoint in our step-directory layout (model.pt + config.yaml naming the tokenizer)."""
from __future__ import annotations

import pytest
import torch
import yaml

from llm.config import ModelConfig
from llm.model import Transformer

MODEL = {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128, "vocab_size": 512, "seq_len": 64}


@pytest.fixture(scope="session")
def eval_checkpoint(tiny_data, tmp_path_factory):
    step = tmp_path_factory.mktemp("eval_ckpt") / "step_00000000"
    step.mkdir()
    model = Transformer(ModelConfig(**MODEL), seed=1)
    torch.save(model.state_dict(), step / "model.pt")
    (step / "config.yaml").write_text(yaml.safe_dump({"model": MODEL, "data": {"tokenizer": tiny_data["tokenizer"]}}))
    return step
