"""Document masking (data.document_mask) and the context-parallel layout rules, in one process."""
import pytest
import torch

from llm.config import ConfigError, ModelConfig, ParallelConfig
from llm.config.data import DataConfig
from llm.documents import segments
from llm.model import Transformer
from parallel.topology import check_layout

EOS = 2
CFG = ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32)


def test_segments_open_at_every_eos():
    doc_ids, positions = segments(torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 3]]), EOS)
    assert doc_ids.tolist() == [[0, 0, 1, 1, 1, 1, 2, 2]]
    assert positions.tolist() == [[0, 1, 0, 1, 2, 3, 0, 1]]


def test_packed_sample_equals_each_document_alone():
    """The summed loss and its gradients over a packed, document-masked sample equal those of its segments trained
    one by one (fp32, to 1e-5 relative)."""
    gen = torch.Generator().manual_seed(0)
    row = torch.randint(3, 64, (1, 25), generator=gen)
    row[0, [0, 7, 16]] = EOS  # three documents, the last one cut by the window
    inputs, targets = row[:, :-1], row[:, 1:]
    model = Transformer(CFG, seed=1)
    doc_ids, positions = segments(inputs, EOS)
    packed = model.lm_loss(inputs, targets, positions=positions, doc_ids=doc_ids) * targets.numel()
    packed.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    alone = sum(model.lm_loss(inputs[:, a:b], targets[:, a:b]) * (b - a) for a, b in ((0, 7), (7, 16), (16, 24)))
    alone.backward()
    assert torch.allclose(packed, alone, rtol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, rtol=1e-4, atol=1e-7), n
    # Without the mask the same sample attends across documents: a different loss.
    assert abs(model.lm_loss(inputs, targets).item() * targets.numel() - alone.item()) > 1e-3


def test_explicit_positions_equal_the_default():
    model = Transformer(CFG, seed=0)
    tokens = torch.randint(0, 64, (2, 16))
    plain = model(tokens)
    assert torch.equal(model(tokens, positions=torch.arange(16).expand(2, 16)), plain)


def test_document_mask_needs_a_tokenizer_and_no_pipeline():
    with pytest.raises(ConfigError, match="document_mask needs data.tokenizer"):
        DataConfig(paths=["x"], document_mask=True).validate()
    from llm.config import config_from_dict
    raw = {"data": {"paths": ["x"], "tokenizer": "t.model", "document_mask": True},
           "parallel": {"pipeline": 2, "zero_stage": 1}}
    with pytest.raises(ConfigError, match="document_mask cannot be combined with parallel.pipeline=2"):
        config_from_dict(raw).validate()


@pytest.mark.parametrize("model,parallel,world,message", [
    ({"seq_len": 30}, {"context": 4}, 4, "does not divide model.seq_len=30"),
    ({"n_kv_heads": 2}, {"context": 4}, 4, r"divide the 2 heads per tensor-parallel rank \(model.n_kv_heads=2"),
    ({"n_kv_heads": 4}, {"context": 2, "tensor": 2}, 4, None),
    ({}, {"context": 2, "tensor": 2}, 4, r"divide the 1 heads per tensor-parallel rank \(model.n_kv_heads=2 / "),
    ({}, {"context": 2, "pipeline": 2, "zero_stage": 1}, 4, "cannot be combined with parallel.pipeline=2"),
    ({}, {"context": 2}, 3, "world size 3 is not divisible"),
    ({"moe": {"experts": 4}}, {"context": 2, "zero_stage": 1}, 2, "cannot be combined with model.moe"),
])
def test_context_layout_rules(model, parallel, world, message):
    from llm.config.model import MoEConfig
    fields = {**dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32), **model}
    if "moe" in fields:
        fields["moe"] = MoEConfig(**fields["moe"])
    pair = (ModelConfig(**fields), ParallelConfig(**parallel))
    if message is None:
        assert check_layout(pair, world) == (2, 1, 1)
    else:
        with pytest.raises(ConfigError, match=message):
            check_layout(pair, world)
