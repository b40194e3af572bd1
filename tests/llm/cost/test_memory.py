"""Predicted per-GPU memory: each term against hand-computed values."""
import pytest

from llm.config import ModelConfig
import dataclasses

from llm.cost.activations import block_bytes_per_token, loss_bytes
from llm.cost.layout import Layout, partition_balanced, pipeline_stages
from llm.cost.memory import memory_per_gpu, stage_params
from llm.shape import count_params, layer_matmul_params

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CFG = ModelConfig(n_layers=4, d_model=128, n_heads=4, d_ff=384, vocab_size=1024, seq_len=32)
TOKENS = 2 * 32  # micro-batch 2


def predict(layout, gbs=8, **kw):
    return memory_per_gpu(CFG, layout, gbs, framework_bytes=0, fragmentation=0.0, **kw)


def test_model_states_follow_the_zero_paper():
    psi = count_params(CFG)
    assert stage_params(CFG, pipeline_stages(CFG, 1)[0], 1) == psi
    for stage, (p, g, o) in {0: (2, 2, 12), 1: (2, 2, 6), 2: (2, 1, 6), 3: (1, 1, 6)}.items():
        m = predict(Layout(1, 1, 2, stage, 2))
        assert (m.params, m.grads, m.optimizer) == (p * psi, g * psi, o * psi)


def test_tensor_parallel_shards_matrices_not_norms():
    per_rank = (2 * 1024 * 128 + 4 * layer_matmul_params(CFG)) // 2 + 4 * 2 * 128 + 128
    assert stage_params(CFG, pipeline_stages(CFG, 1)[0], 2) == per_rank


def test_buckets_and_zero3_gathers():
    assert predict(Layout(1, 1, 2, 0, 2)).buckets == 0
    assert predict(Layout(1, 1, 2, 2, 2), reduce_bucket_size=1000).buckets == 2000
    # ZeRO-3 gathers at most the whole (small) model, besides its bucket.
    z3 = predict(Layout(1, 1, 2, 3, 2), reduce_bucket_size=1000)
    assert (z3.buckets, z3.gathered_params) == (2000, 2 * count_params(CFG))


def test_a_bucket_larger_than_the_model_is_filled_only_by_its_gradients():
    """Issue 22: a 5M model predicted 1.25 GB per rank, 1 GB of it the 5e8-element bucket DeepSpeed allocates in
    full (llm/cost/zero.py) but a CPU rank only touches as far as its 2Ψ bytes of gradients reach."""
    psi = count_params(CFG)
    big = predict(Layout(1, 1, 2, 1, 2))  # DeepSpeed's default bucket, 5e8 elements
    assert (big.buckets, big.buckets_filled) == (10 ** 9, 2 * psi)
    assert big.resident == big.tensors - (10 ** 9 - 2 * psi) and big.as_dict()["resident"] == big.resident
    small = predict(Layout(1, 1, 2, 2, 2), reduce_bucket_size=1000)  # gradients fill a small bucket, and reuse it
    assert small.buckets_filled == small.buckets == 2000 and small.resident == small.tensors
    assert predict(Layout(1, 1, 2, 0, 2)).resident == predict(Layout(1, 1, 2, 0, 2)).tensors  # no ZeRO, no bucket


def test_optimizer_step_peak():
    psi = count_params(CFG)
    z0 = predict(Layout(1, 1, 2, 0, 2))
    assert z0.optimizer_step == 8 * psi  # fp32 gradient copies and AdamW's foreach temporary
    assert z0.tensors == 16 * psi + max(z0.activations + z0.logits_and_loss, 8 * psi)
    # CPU (single-tensor AdamW): 12 bytes per element of the largest tensor, the 1024 x 128 embedding.
    assert predict(Layout(1, 1, 2, 0, 2), foreach_adam=False).optimizer_step == 4 * psi + 12 * 1024 * 128
    z1 = predict(Layout(1, 1, 2, 1, 2), reduce_bucket_size=0)
    assert z1.optimizer_step == 8 * psi // 2 - (2 * psi - psi)  # at the step ZeRO-1 holds a gradient partition
    assert predict(Layout(1, 1, 2, 2, 2), foreach_adam=False).optimizer_step == 12 * psi // 2


def test_activations_one_micro_batch_without_pipeline():
    m = predict(Layout(1, 1, 2, 0, 2))
    assert m.activations == round(4 * block_bytes_per_token(CFG) * TOKENS + 8 * TOKENS)  # + int64 token ids
    assert m.logits_and_loss == loss_bytes(CFG, TOKENS)


def test_full_and_every_k_checkpointing():
    full, kept = block_bytes_per_token(CFG) * TOKENS, 2 * 128 * TOKENS
    ids = 8 * TOKENS
    logits = loss_bytes(CFG, TOKENS)
    # Every block keeps its input; one block is recomputed at a time, after the loss's buffers are freed: the
    # larger of the two transients counts.
    assert predict(Layout(1, 1, 2, 0, 2, 1)).activations == round(4 * kept + max(0, full - logits) + ids)
    # Blocks 0 and 2 recomputed, 1 and 3 keep everything.
    assert predict(Layout(1, 1, 2, 0, 2, 2)).activations == round(2 * kept + 2 * full + max(0, full - logits) + ids)


def test_pipeline_first_stage_holds_pp_micro_batches():
    cfg = ModelConfig(n_layers=8, d_model=128, n_heads=4, d_ff=384, vocab_size=128, seq_len=32)
    stages = pipeline_stages(cfg, 2)
    assert stages[0].count("block") == 4 and stages[0][0] == "embedding" and stages[1][-1] == "head"
    m = memory_per_gpu(cfg, Layout(1, 2, 1, 0, 2), 8, framework_bytes=0, fragmentation=0.0)  # m = 4 micro-batches
    blocks = 4 * block_bytes_per_token(cfg) * TOKENS
    # The pipe buffers: the received input and the output sent on; the last stage's output is the final hidden
    # state the fused head + loss reads.
    stage0 = 2 * (blocks + 2 * 2 * 128 * TOKENS + 8 * TOKENS)  # two in flight on the first of two stages, + ids
    stage1 = blocks + (2 * 128 + 2 * 128) * TOKENS + loss_bytes(cfg, TOKENS)
    assert m.activations + m.logits_and_loss == pytest.approx({0: stage0, 1: stage1}[m.stage], abs=2)
    assert stage0 > stage1  # in activations the first stage holds the most: pp micro-batches in flight


def test_allowance():
    m = memory_per_gpu(CFG, Layout(1, 1, 2, 0, 2), 8, framework_bytes=1000, fragmentation=0.1)
    assert m.allowance == round(1000 + 0.1 * m.tensors) and m.total == m.tensors + m.allowance


def test_partition_balanced_is_deepspeeds():
    from deepspeed.runtime.utils import partition_balanced as ds_partition
    for weights, parts in (([5, 1, 1, 1, 1, 1, 1, 5], 2), ([100] + [30] * 8 + [1, 100], 4), ([3, 3], 4),
                           ([7] * 9, 3)):
        assert partition_balanced(weights, parts) == [int(x) for x in ds_partition(weights, parts)]


LONG = ModelConfig(n_layers=4, d_model=128, n_heads=8, n_kv_heads=4, d_ff=384, vocab_size=1024, seq_len=8192)


def test_context_parallel_divides_activations_and_loss_rows():
    """Ulysses: a rank holds seq/C tokens of each sample, the attention core's included (whole sequence, 1/C of the
    heads), so every activation term is the C = 1 count at seq/C; so are the loss's rows."""
    for c in (2, 4):
        m = memory_per_gpu(LONG, Layout(1, 1, 1, 0, 1, context=c), 1, framework_bytes=0, fragmentation=0.0)
        short = dataclasses.replace(LONG, seq_len=LONG.seq_len // c)
        ref = memory_per_gpu(short, Layout(1, 1, 1, 0, 1), 1, framework_bytes=0, fragmentation=0.0)
        assert m.activations == ref.activations == round(4 * block_bytes_per_token(LONG) * 8192 / c + 8 * 8192 / c)
        assert m.logits_and_loss == round(loss_bytes(LONG, 8192 // c))
    # Full recompute keeps each block's input, seq/C × d_model per layer (+ one block recomputed at a time).
    ck = memory_per_gpu(LONG, Layout(1, 1, 1, 0, 1, 1, context=4), 1, framework_bytes=0, fragmentation=0.0)
    tokens = 8192 // 4
    assert ck.activations == round(4 * 2 * 128 * tokens + max(0, block_bytes_per_token(LONG) * tokens
                                                               - loss_bytes(LONG, tokens)) + 8 * tokens)


def test_zero_shards_over_data_and_context_ranks():
    """ZeRO partitions over DeepSpeed's seq_data_parallel group: dp·C ranks hold the same parameters."""
    psi = count_params(LONG)
    for stage, (p, g, o) in {1: (2, 2, 12 / 8), 2: (2, 2 / 8, 12 / 8), 3: (2 / 8, 2 / 8, 12 / 8)}.items():
        m = memory_per_gpu(LONG, Layout(1, 1, 2, stage, 1, context=4), 2, framework_bytes=0, fragmentation=0.0)
        assert (m.params, m.grads, m.optimizer) == (round(p * psi), round(g * psi), round(o * psi))
        same = memory_per_gpu(LONG, Layout(1, 1, 8, stage, 1), 8, framework_bytes=0, fragmentation=0.0)
        assert (m.params, m.grads, m.optimizer, m.optimizer_step) == (same.params, same.grads, same.optimizer,
                                                                      same.optimizer_step)
    assert Layout(2, 1, 2, 1, 1, context=4).world_size == 16 and Layout(2, 1, 2, 1, 1, context=4).zero_dp == 8


def test_document_mask_is_its_own_item():
    lay = Layout(1, 1, 1, 0, 2, context=4)
    plain = memory_per_gpu(LONG, lay, 2, framework_bytes=0, fragmentation=0.0)
    masked = memory_per_gpu(LONG, lay, 2, framework_bytes=0, fragmentation=0.0, document_mask=True)
    assert masked.document_mask == 2 * 8192 ** 2  # whole on every context rank: each attends over the sequence
    assert masked.tensors - plain.tensors == masked.document_mask and masked.as_dict()["document_mask"] > 0
    assert "document_mask" not in plain.as_dict()


def test_tiled_mlp_keeps_no_mlp_activation():
    """parallel.tiled_mlp: each dense block drops its MLP's 4·e·d_ff per token; the backward holds one slice's."""
    plain = memory_per_gpu(LONG, Layout(1, 1, 1, 0, 1), 1, framework_bytes=0, fragmentation=0.0)
    tiled = memory_per_gpu(LONG, Layout(1, 1, 1, 0, 1, tiled_mlp=8), 1, framework_bytes=0, fragmentation=0.0)
    mlp = 4 * 2 * 384 * 8192  # bf16, one block
    assert plain.activations - 4 * mlp <= tiled.activations <= plain.activations - 4 * mlp + mlp / 8
    assert Layout(1, 1, 1, 0, 1, tiled_mlp=8).parallel_dict()["tiled_mlp"] == 8
