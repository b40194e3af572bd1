"""The MoE block's activation count against the tensors autograd saves."""
import pytest

torch = pytest.importorskip("torch")

from llm.config import ModelConfig  # noqa: E402
from llm.config.model import MoEConfig  # noqa: E402
from llm.cost.activations import block_bytes_per_token, moe_mlp_bytes_per_token  # noqa: E402
from llm.model import Block  # noqa: E402
from tests.llm.cost.test_activations import _saved_bytes  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("moe", [dict(experts=8, top_k=2, expert_d_ff=96), dict(experts=8, top_k=3, expert_d_ff=32),
                                 dict(experts=4, top_k=1, expert_d_ff=64, shared_experts=1)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_moe_block_count_is_what_autograd_saves(moe, dtype):
    cfg = ModelConfig(n_layers=1, d_model=128, n_heads=4, d_ff=384, vocab_size=1024, seq_len=32, moe=MoEConfig(**moe))
    torch.manual_seed(0)
    block = Block(cfg, 0).to(dtype)
    x = torch.randn(2, 32, 128, dtype=dtype, requires_grad=True)
    e = torch.finfo(dtype).bits // 8
    record = e * cfg.moe.experts  # the router logits the model's record keeps: not the block's
    assert _saved_bytes(block, x) == (block_bytes_per_token(cfg, element_bytes=e, layer=0) - record) * 2 * 32


def test_routed_term_scales_with_top_k():
    one, two = (ModelConfig(n_layers=1, d_model=128, n_heads=4, moe=MoEConfig(experts=8, top_k=k, expert_d_ff=96))
                for k in (1, 2))
    assert moe_mlp_bytes_per_token(two) - moe_mlp_bytes_per_token(one) == 3 * 2 * 128 + 4 * 2 * 96 + 2 + 36
