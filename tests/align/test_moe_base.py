"""The alignment chain from a mixture-of-experts base (a Mixtral directory): the base stage imports it with its
MoEConfig, SFT trains it with the load-balancing loss added to its cross-entropy (llm/align/sft.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from llm.align import handoff
from llm.align.config import load_align_config
from llm.train import safe_load
from tests.align.test_hf_base import RECIPE, _bpe_tokenizer
from tests.llm.hf.helpers import LOGITS_ATOL

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def make_mixtral_base(path):
    """A random-init MixtralForCausalLM (4 experts, top-2, GQA) and its tokenizer saved together in `path`."""
    from transformers import MixtralConfig, MixtralForCausalLM
    tok = _bpe_tokenizer()
    config = MixtralConfig(vocab_size=320, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
                           num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02, rms_norm_eps=1e-6,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    MixtralForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_sft_from_an_moe_base_trains_the_router(tmp_path, monkeypatch):
    from llm.align.chain import run_chain
    from llm.model import Transformer
    aux_losses = []  # what each training step added to its cross-entropy
    moe_loss = Transformer.moe_loss

    def recorded(self):
        out = moe_loss(self)
        aux_losses.append(out)
        return out

    monkeypatch.setattr(Transformer, "moe_loss", recorded)
    hf = make_mixtral_base(tmp_path / "hf")
    torch.set_num_threads(1)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path / 'out'}", f"base.path={hf}", "stages=[base,sft]",
                                     "task.n_train=40", "task.n_dev=8", "task.n_eval_prompts=4", "sft.steps=2",
                                     "sft.batch_size=4", "sft.eval_every=0", "sft.optim.warmup_steps=0"])
    run_chain(cfg)
    assert len(aux_losses) == 2 and all(a.requires_grad and math.isfinite(a.item()) and a > 0 for a in aux_losses)
    info = handoff.read_info(tmp_path / "out" / "sft")
    # top_k × the Mixtral coefficient (llm/hf/convert.py)
    assert info.model_config.moe is not None and info.model_config.moe.aux_loss_coef == 0.02 * 2
    rows = [json.loads(s) for s in (tmp_path / "out" / "logs" / "sft.metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), rows
    base = safe_load.load(tmp_path / "out" / "base" / "model.pt")
    sft = safe_load.load(tmp_path / "out" / "sft" / "model.pt")
    for i in range(2):
        name = f"layers.{i}.mlp.router.weight"
        assert not torch.equal(base[name], sft[name]), name
    model, _ = handoff.load_stage(tmp_path / "out" / "sft", "lm")
    assert type(model.layers[0].mlp).__name__ == "MoE"
    # The fine-tuned MoE stage exports back to a Mixtral equal to it.
    from transformers import AutoModelForCausalLM
    from llm.hf.export import export_hf
    export_hf(tmp_path / "out" / "sft", tmp_path / "exported")
    tokens = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()(input_ids=tokens).logits
        assert (model.eval()(tokens) - theirs).abs().max() < LOGITS_ATOL

