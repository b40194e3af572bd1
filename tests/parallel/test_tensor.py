"""Tensor-parallel layers, loss and model wrapper against their single-process twins, on 2 and 4 gloo ranks.

Every rank builds the dense reference itself from fixed seeds, runs forward and backward through both, and checks
its shard against the matching slice of the dense result (a failed check raises on the rank and surfaces in the
test with the rank's traceback).

Tolerance (fp32): |tp - dense| <= 1e-6 + 1e-5·|dense| elementwise. Tensor parallelism changes only the order of
floating-point sums: a row-parallel matmul adds tp partial dot products instead of accumulating one, the
vocab-parallel softmax adds tp partial sums of exponentials, and weight gradients under sequence parallelism add
tp partial sums over the sequence. Each reordering moves a result by a few ulps (fp32 ulp = 1.2e-7 relative); the
test values are O(1) (the loss weights are scaled so that weight gradients are too) and the sums at most a few
hundred terms long, so the tolerance is ~10 ulps, while any indexing or communication bug errs by O(1).
Measured on 2 and 4 ranks: max absolute error 9.5e-7 (one ulp of an O(5) loss), every check within 0.22 of the
tolerance (`pytest -s` prints the fraction per test). The chunked vocab-parallel head + loss and three SGD steps of
the TP model's `compute_loss` are held to the same tolerance (measured: within 0.05 of it); only the check of
logits shifted to ~100, where fp32's ulp is 7.6e-6 whatever the order of the dot products, allows 1e-4.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm.config import ConfigError, ModelConfig
from llm.model import Attention, Block, SwiGLU, Transformer
from parallel.tensor import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding, apply_tensor_parallel,
                             parallelize_modules, partition_dim)
from parallel.universal import universal_checkpoint_info
from llm.chunked_loss import linear_cross_entropy
from parallel.vocab_parallel_loss import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
from parallel.tp_mappings import split
from tests.parallel.dist_utils import shared_workers
from tests.parallel.tp_state import gather_tensor_parallel_state_dict, shard_state_dict

ATOL, RTOL = 1e-6, 1e-5

GQA = dict(n_layers=2, d_model=64, n_heads=8, n_kv_heads=4, d_ff=128, vocab_size=128, seq_len=16)
TIED = dict(GQA, n_kv_heads=8, tie_embeddings=True)


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"tp{n}")
def workers(request):
    return shared_workers(request.param)


# --------------------------------------------------------------------------------------------------------------
# helpers that run on the ranks

_TOPOLOGY = {}


def _topology():
    """One all-tensor-parallel Topology per worker process (building groups is collective: every rank calls it
    at the same point of the same test)."""
    from parallel.topology import Topology
    if "topo" not in _TOPOLOGY:
        _TOPOLOGY["topo"] = Topology(tp=torch.distributed.get_world_size())
    return _TOPOLOGY["topo"]


class _Checker:
    """assert_close with the module tolerance, remembering the largest error seen as a fraction of the tolerance
    (|actual - expected| / (ATOL + RTOL·|expected|), maximised over elements and checks)."""

    def __init__(self):
        self.max_used = 0.0

    def __call__(self, name, actual, expected):
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
        used = ((actual - expected).abs() / (ATOL + RTOL * expected.abs())).max().item()
        self.max_used = max(self.max_used, used)


def _rank_slice(t, dim, topo):
    return t.chunk(topo.tp, dim)[topo.tp_rank]


def _linear(d_in, d_out, gen):
    layer = nn.Linear(d_in, d_out, bias=True)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in, generator=gen) * 0.3)
        layer.bias.copy_(torch.randn(d_out, generator=gen))
    return layer


def _upstream(shape, gen):
    """Weights of the test loss sum(y · r): small enough that the weight gradients (sums over the batch and
    sequence) stay O(1), the scale the tolerance is stated for."""
    return torch.randn(shape, generator=gen) * 0.1


def _dense_grads(layer, x, weight_of_loss):
    x = x.clone().requires_grad_()
    y = layer(x)
    (y * weight_of_loss).sum().backward()
    return y.detach(), x.grad


def check_layers(sequence_parallel: bool) -> float:
    topo = _topology()
    g, check = topo.tp_group, _Checker()
    gen = torch.Generator().manual_seed(0)
    b, t, d, h = 2, 8, 16, 24
    seq = (lambda u: split(u, 1, g)) if sequence_parallel else (lambda u: u)

    # Column-parallel: output features split; input replicated (or sequence-split and gathered).
    for gather_output in (False, True):
        dense, x, r = _linear(d, h, gen), torch.randn(b, t, d, generator=gen), _upstream((b, t, h), gen)
        y_ref, gx_ref = _dense_grads(dense, x, r)
        layer = ColumnParallelLinear.from_dense(dense, g, gather_output=gather_output,
                                                sequence_parallel=sequence_parallel)
        xl = seq(x).clone().requires_grad_()
        y = layer(xl)
        (y * (r if gather_output else _rank_slice(r, -1, topo))).sum().backward()
        tag = f"column(gather_output={gather_output})"
        check(f"{tag} output", y, y_ref if gather_output else _rank_slice(y_ref, -1, topo))
        check(f"{tag} input grad", xl.grad, seq(gx_ref))
        check(f"{tag} weight grad", layer.weight.grad, _rank_slice(dense.weight.grad, 0, topo))
        check(f"{tag} bias grad", layer.bias.grad, _rank_slice(dense.bias.grad, 0, topo))

    # Row-parallel: input features split; partial outputs summed (or reduce-scattered along the sequence).
    for input_is_parallel in (True, False):
        if sequence_parallel and not input_is_parallel:
            continue  # a sequence-parallel row layer always follows a column layer
        dense, x, r = _linear(h, d, gen), torch.randn(b, t, h, generator=gen), _upstream((b, t, d), gen)
        y_ref, gx_ref = _dense_grads(dense, x, r)
        layer = RowParallelLinear.from_dense(dense, g, input_is_parallel=input_is_parallel,
                                             sequence_parallel=sequence_parallel)
        xl = (_rank_slice(x, -1, topo) if input_is_parallel else x).clone().requires_grad_()
        y = layer(xl)
        (y * seq(r)).sum().backward()
        tag = f"row(input_is_parallel={input_is_parallel})"
        check(f"{tag} output", y, seq(y_ref))
        check(f"{tag} input grad", xl.grad, _rank_slice(gx_ref, -1, topo) if input_is_parallel else gx_ref)
        check(f"{tag} weight grad", layer.weight.grad, _rank_slice(dense.weight.grad, 1, topo))
        check(f"{tag} bias grad", layer.bias.grad, dense.bias.grad)

    # Vocab-parallel embedding: every rank looks up its rows, zeros elsewhere, ranks sum.
    vocab = 32
    dense = nn.Embedding(vocab, d)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(vocab, d, generator=gen))
    tokens, r = torch.randint(0, vocab, (b, t), generator=gen), _upstream((b, t, d), gen)
    y_ref = dense(tokens)
    (y_ref * r).sum().backward()
    layer = VocabParallelEmbedding.from_dense(dense, g, sequence_parallel=sequence_parallel)
    y = layer(tokens)
    (y * seq(r)).sum().backward()
    check("embedding output", y, seq(y_ref.detach()))
    check("embedding weight grad", layer.weight.grad, _rank_slice(dense.weight.grad, 0, topo))
    return check.max_used


def check_cross_entropy() -> float:
    topo = _topology()
    check = _Checker()
    gen = torch.Generator().manual_seed(1)
    b, t, vocab = 3, 5, 32
    for offset in (0.0, 80.0):  # exp(80) overflows fp32 without the max subtraction
        logits = torch.randn(b, t, vocab, generator=gen) * 3 + offset
        targets = torch.randint(0, vocab, (b, t), generator=gen)
        targets[0, :2] = -100
        ref_logits = logits.clone().requires_grad_()
        ref = F.cross_entropy(ref_logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        ref.backward()
        shard = _rank_slice(logits, -1, topo).clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(shard, targets, topo.tp_group)
        loss.backward()
        check(f"CE loss (offset {offset})", loss, ref.detach())
        check(f"CE logits grad (offset {offset})", shard.grad, _rank_slice(ref_logits.grad, -1, topo))
        assert shard.grad[0, :2].abs().max() == 0, "ignored positions must get no gradient"
    return check.max_used


def check_linear_cross_entropy(sequence_parallel: bool) -> float:
    """The chunked vocab-parallel head + loss against F.linear then F.cross_entropy on the full logits: loss (also
    without gradients), the hidden states' gradient (whole, or this rank's sequence slice) and the weight shard's."""
    topo = _topology()
    g, check = topo.tp_group, _Checker()
    gen = torch.Generator().manual_seed(6)
    b, t, d, vocab = 3, 8, 16, 32
    seq = (lambda u: split(u, 1, g)) if sequence_parallel else (lambda u: u)
    for offset in (0.0, 100.0):  # exp(100) overflows fp32 without the max subtraction
        h = torch.randn(b, t, d, generator=gen)
        h[..., 0] = offset
        w = torch.randn(vocab, d, generator=gen) * 0.5
        w[:, 0] = 1.0  # every logit shifted by offset
        targets = torch.randint(0, vocab, (b, t), generator=gen)
        targets[0, :3] = -100
        h_ref, w_ref = h.clone().requires_grad_(), w.clone().requires_grad_()
        ref = F.cross_entropy(F.linear(h_ref, w_ref).flatten(0, 1), targets.flatten(), ignore_index=-100)
        ref.backward()
        hl, wl = seq(h).clone().requires_grad_(), _rank_slice(w, 0, topo).clone().requires_grad_()
        # 5 rows a chunk: 24 rows make 4 full chunks and a short one, ignored rows inside the first.
        loss = vocab_parallel_linear_cross_entropy(hl, wl, targets, g, sequence_parallel, chunk_rows=5)
        (2.0 * loss).backward()  # an upstream gradient other than 1 scales both gradients
        with torch.no_grad():
            loss_only = vocab_parallel_linear_cross_entropy(seq(h), wl, targets, g, sequence_parallel, chunk_rows=5)
        for name, actual, expected in [("loss", loss.detach(), ref.detach()), ("no-grad loss", loss_only, ref.detach()),
                                       ("hidden grad", hl.grad, 2.0 * seq(h_ref.grad)),
                                       ("weight grad", wl.grad, 2.0 * _rank_slice(w_ref.grad, 0, topo))]:
            name = f"linear CE (offset {offset}) {name}"
            if offset == 0:
                check(name, actual, expected)
            else:  # logits near 100 carry fp32's ulp there (7.6e-6) whatever the order of the dot products
                torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    return check.max_used


def check_training_steps(cfg_kwargs: dict, sequence_parallel: bool) -> list[float]:
    """Three SGD steps of `compute_loss` (the chunked vocab-parallel head loss) against the single-process model's
    (its chunked plain loss): the same losses, and at the end this rank's shard of the same weights. (SGD, not
    Adam: Adam's g/√v would blow a gradient's last-ulp differences up where the gradient is near zero.)"""
    topo = _topology()
    check, cfg = _Checker(), ModelConfig(**cfg_kwargs)
    dense = Transformer(cfg, seed=0)
    model = apply_tensor_parallel(Transformer(cfg, seed=0), topo, sequence_parallel=sequence_parallel)
    # lr 0.1 (measured: weights within 2e-8 of the reference on 4 ranks, either loss path); at lr 1.0 this tiny model
    # is chaotic enough that the plain logits path already drifts 1e-4 from the reference in 3 steps.
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (dense, model)]
    for step in range(3):
        tokens, targets = _batch(cfg, seed=10 + step)
        losses = []
        for m, opt in zip((dense, model), opts):
            opt.zero_grad()
            loss = m.compute_loss(tokens, targets)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        check(f"step {step} loss", losses[1], losses[0])
    ref = dense.state_dict()
    for name, p in model.named_parameters():
        expected = ref[name]
        if getattr(p, "tensor_model_parallel", False):
            expected = _rank_slice(expected, p.partition_dim, topo)
        check(f"weight {name} after 3 steps", p.detach(), expected)
    return check.max_used


class _NoNorms(nn.Module):
    """Attention then SwiGLU, no norms or residuals: the TP regions do not depend on the rest of a Block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn, self.mlp = Attention(cfg), SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x):
        return self.mlp(self.attn(x))


def check_parts(sequence_parallel: bool) -> float:
    """parallelize_modules on a whole Block and on a module holding only an Attention and a SwiGLU, against the
    dense module."""
    topo = _topology()
    g, check = topo.tp_group, _Checker()
    cfg = ModelConfig(**GQA)
    seq = (lambda u: split(u, 1, g)) if sequence_parallel else (lambda u: u)
    gen = torch.Generator().manual_seed(4)
    for make in (Block, _NoNorms):
        torch.manual_seed(5)
        dense = make(cfg)
        x = torch.randn(2, 8, cfg.d_model, generator=gen)
        r = _upstream((2, 8, cfg.d_model), gen)
        y_ref, gx_ref = _dense_grads(dense, x, r)
        torch.manual_seed(5)
        module = parallelize_modules(make(cfg), g, sequence_parallel)
        xl = seq(x).clone().requires_grad_()
        (module(xl) * seq(r)).sum().backward()
        check(f"{make.__name__} output", module(xl).detach(), seq(y_ref))
        check(f"{make.__name__} input grad", xl.grad, seq(gx_ref))
        for name, p in module.named_parameters():
            expected = dense.get_parameter(name).grad
            if getattr(p, "tensor_model_parallel", False):
                expected = _rank_slice(expected, p.partition_dim, topo)
            check(f"{make.__name__} grad {name}", p.grad, expected)
    return check.max_used


def _batch(cfg: ModelConfig, seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab_size, (2, 8), generator=gen)
    targets = torch.randint(0, cfg.vocab_size, (2, 8), generator=gen)
    targets[1, -3:] = -100
    return tokens, targets


def check_transformer(cfg_kwargs: dict, sequence_parallel: bool) -> float:
    topo = _topology()
    check, cfg = _Checker(), ModelConfig(**cfg_kwargs)
    tokens, targets = _batch(cfg)
    dense = Transformer(cfg, seed=0)
    ref_logits = dense(tokens)
    ref_loss = dense.loss_fn(ref_logits, targets)
    ref_loss.backward()
    ref_grads = {n: p.grad for n, p in dense.named_parameters()}

    model = apply_tensor_parallel(Transformer(cfg, seed=0), topo, sequence_parallel=sequence_parallel)
    assert model.layers[0].attn.n_heads == cfg.n_heads // topo.tp
    assert model.layers[0].attn.n_kv_heads == cfg.n_kv_heads // topo.tp
    assert (model.lm_head.weight is model.tok_embeddings.weight) == cfg.tie_embeddings
    logits = model(tokens)
    loss = model.loss_fn(logits, targets)
    loss.backward()
    check("logits", logits, _rank_slice(ref_logits.detach(), -1, topo))
    check("loss", loss, ref_loss.detach())
    names = [n for n, _ in model.named_parameters()]
    assert names == list(ref_grads), "parameter names must stay those of llm/model.py"
    for name, p in model.named_parameters():
        expected = ref_grads[name]
        if getattr(p, "tensor_model_parallel", False):
            expected = _rank_slice(expected, p.partition_dim, topo)
        check(f"grad {name}", p.grad, expected)
    return check.max_used


def check_state_dict_round_trip(cfg_kwargs: dict) -> bool:
    topo = _topology()
    cfg = ModelConfig(**cfg_kwargs)
    full_ref = Transformer(cfg, seed=0).state_dict()
    model = apply_tensor_parallel(Transformer(cfg, seed=0), topo)
    full = gather_tensor_parallel_state_dict(model, topo)
    assert list(full) == list(full_ref)
    for name, t in full.items():
        assert t.device.type == "cpu" and torch.equal(t, full_ref[name]), name
    if cfg.tie_embeddings:
        assert full["lm_head.weight"] is full["tok_embeddings.weight"]
    local = shard_state_dict(full, cfg, topo.tp_rank, topo.tp)
    for name, t in model.state_dict().items():
        assert torch.equal(local[name], t), name
    fresh = apply_tensor_parallel(Transformer(cfg, seed=1), topo)
    fresh.load_state_dict(local)
    tokens, _ = _batch(cfg)
    assert torch.equal(fresh(tokens), model(tokens))
    return True


# --------------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "sp"])
def test_layers_match_dense(workers, sequence_parallel):
    errors = workers.run(check_layers, sequence_parallel)
    print(f"\nlayers tp={workers.world_size} sp={sequence_parallel}: max error {max(errors):.2f} of the tolerance")


@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "sp"])
def test_parallelize_modules_on_parts(workers, sequence_parallel):
    errors = workers.run(check_parts, sequence_parallel)
    print(f"\nblock parts tp={workers.world_size} sp={sequence_parallel}: max error {max(errors):.2f} of the tolerance")


def test_vocab_parallel_cross_entropy(workers):
    errors = workers.run(check_cross_entropy)
    print(f"\ncross-entropy tp={workers.world_size}: max error {max(errors):.2f} of the tolerance")


@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "sp"])
def test_chunked_vocab_parallel_linear_cross_entropy(workers, sequence_parallel):
    errors = workers.run(check_linear_cross_entropy, sequence_parallel)
    print(f"\nchunked linear CE tp={workers.world_size} sp={sequence_parallel}: max error {max(errors):.2f} "
          f"of the tolerance")


@pytest.mark.parametrize("cfg", [GQA, TIED], ids=["gqa", "tied"])
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "sp"])
def test_training_steps_match_single_process(workers, cfg, sequence_parallel):
    errors = workers.run(check_training_steps, cfg, sequence_parallel)
    print(f"\ntraining tp={workers.world_size} sp={sequence_parallel}: max error {max(errors):.2f} of the tolerance")


@pytest.mark.parametrize("cfg", [GQA, TIED], ids=["gqa", "tied"])
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "sp"])
def test_transformer_matches_single_process(workers, cfg, sequence_parallel):
    errors = workers.run(check_transformer, cfg, sequence_parallel)
    print(f"\ntransformer tp={workers.world_size} sp={sequence_parallel}: max error {max(errors):.2f} of the tolerance")


@pytest.mark.parametrize("cfg", [GQA, TIED], ids=["gqa", "tied"])
def test_state_dict_round_trip_is_exact(workers, cfg):
    assert all(workers.run(check_state_dict_round_trip, cfg))


# --------------------------------------------------------------------------------------------------------------
# single process


def test_layers_without_group_are_dense():
    gen = torch.Generator().manual_seed(0)
    dense, x = _linear(16, 24, gen), torch.randn(2, 3, 16, generator=gen)
    assert torch.equal(ColumnParallelLinear.from_dense(dense, None)(x), dense(x))
    assert torch.equal(RowParallelLinear.from_dense(dense, None)(x), dense(x))
    logits, targets = torch.randn(2, 3, 10, generator=gen), torch.tensor([[1, 2, -100], [0, 9, 4]])
    torch.testing.assert_close(vocab_parallel_cross_entropy(logits, targets, None),
                               F.cross_entropy(logits.flatten(0, 1), targets.flatten()), atol=ATOL, rtol=RTOL)
    h, w = torch.randn(2, 3, 16, generator=gen), torch.randn(10, 16, generator=gen)
    torch.testing.assert_close(vocab_parallel_linear_cross_entropy(h, w, targets, None, chunk_rows=4),
                               linear_cross_entropy(h, w, targets), atol=ATOL, rtol=RTOL)


def test_parallelize_modules_rejects_unplaced_layers():
    with pytest.raises(ValueError, match="found one at ''; pass the Block or the model"):
        parallelize_modules(Attention(ModelConfig(**GQA)), None)


def test_partition_dim_follows_the_plan():
    assert partition_dim("layers.3.attn.wq.weight") == partition_dim("7.mlp.w_gate.weight") == 0
    assert partition_dim("layers.0.attn.wo.weight") == partition_dim("mlp.w_down.weight") == 1
    assert partition_dim("tok_embeddings.weight") == partition_dim("lm_head.weight") == 0
    assert partition_dim("layers.0.attn_norm.weight") is None and partition_dim("norm.weight") is None


def test_shard_state_dict_rejects_indivisible_shapes():
    cfg = ModelConfig(**GQA)
    with pytest.raises(ConfigError, match="parallel.tensor=3 does not divide model.n_heads=8"):
        shard_state_dict(Transformer(cfg).state_dict(), cfg, 0, 3)


@pytest.mark.parametrize("tied", [False, True])
def test_universal_checkpoint_info_classifies_every_parameter(tied):
    import re
    from deepspeed.checkpoint import constants as C
    cfg = ModelConfig(**dict(GQA, tie_embeddings=tied))
    info = universal_checkpoint_info(cfg)
    kinds = {C.TP_REPLICATED_PARAMETER_PATTERNS: "replicated", C.PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: "row",
             C.VOCABULARY_PARAMETER_PATTERNS: "vocab"}
    used = set()
    found = {}
    for name, _ in Transformer(cfg).named_parameters():
        for prefix in ("", "module.", "3."):  # plain, wrapped, pipeline layer file
            hits = [(k, p) for k in kinds for p in info[k] if re.match(p, prefix + name)]
            assert len(hits) <= 1, (name, hits)
            used.update(p for _, p in hits)
            found[prefix + name] = kinds[hits[0][0]] if hits else "column"
    # DeepSpeed's converter fails in strict mode on a pattern that matches nothing.
    assert used == {p for k in kinds for p in info[k]}
    assert found["layers.1.attn.wo.weight"] == found["3.layers.1.mlp.w_down.weight"] == "row"
    assert found["layers.0.attn.wq.weight"] == found["layers.0.mlp.w_up.weight"] == "column"
    assert found["norm.weight"] == found["module.layers.0.attn_norm.weight"] == "replicated"
    assert found["tok_embeddings.weight"] == "vocab"
    assert info[C.ORIGINAL_VOCAB_SIZE] == info[C.PADDED_VOCAB_SIZE] == cfg.vocab_size
    if not tied:
        assert found["lm_head.weight"] == "vocab"
