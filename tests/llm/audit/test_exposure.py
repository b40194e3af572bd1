"""Exposure maths (llm/audit/exposure.py) on a model whose probabilities are known: a hand-built bigram table."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from llm.audit import exposure as ex
from llm.audit.memorization import greedy_matches, passage_memorization, repetition_label

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

V = 8


class Bigram(torch.nn.Module):
    """Fixed next-token logits given the current token: our model's interface (tokens -> logits) and its
    generate, with probabilities one can write down."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, tokens):
        return self.logits[tokens]

    def generate(self, prompt, n, temperature=0.0):
        out = prompt
        for _ in range(n):
            out = torch.cat([out, self(out)[:, -1].argmax(-1, keepdim=True)], 1)
        return out


def test_log_perplexity_is_the_sum_of_minus_log2_probabilities_after_the_context_token():
    torch.manual_seed(0)
    table = torch.randn(V, V)
    logp = table.log_softmax(-1) / math.log(2)
    seqs = [[3, 1, 4, 1, 5], [2, 6], [7]]
    got = ex.log_perplexity(Bigram(table), seqs, context_id=0, batch_size=2)
    for s, bits in zip(seqs, got):
        prev = [0] + s[:-1]
        assert bits == pytest.approx(-sum(float(logp[a, b]) for a, b in zip(prev, s)), rel=1e-5)


def test_a_uniform_model_gives_every_sequence_the_same_bits_and_one_bit_of_sampled_exposure():
    bits = ex.log_perplexity(Bigram(torch.zeros(V, V)), [[1, 2, 3], [4, 5, 6]], context_id=0)
    assert bits == pytest.approx([3 * math.log2(V)] * 2)
    assert ex.exposure_sampled(bits[0], np.full(99, bits[0])) == pytest.approx(-math.log2(50.5 / 100))


def test_sampled_exposure_is_minus_log2_of_the_rank_fraction():
    candidates = np.arange(1.0, 100.0)  # 99 candidates: 1, 2, ..., 99 bits
    assert ex.exposure_sampled(0.5, candidates) == pytest.approx(math.log2(100))  # the cap, log2(K + 1)
    assert ex.exposure_sampled(10.5, candidates) == pytest.approx(-math.log2(11 / 100))
    assert ex.exposure_sampled(1000.0, candidates) == pytest.approx(0.0)


def test_extrapolated_exposure_reads_the_fitted_tail_past_the_sampling_cap():
    rng = np.random.RandomState(0)
    candidates = rng.normal(100.0, 5.0, size=20000)
    fit = ex.fit_candidates(candidates)
    assert ex.exposure_extrapolated(100.0, fit) == pytest.approx(1.0, abs=0.05)  # the median: half are likelier
    want = -math.log2(norm.cdf(-6.0))  # 6 sigma below: ~30 bits, beyond log2(20001) = 14.3
    assert ex.exposure_extrapolated(70.0, fit) == pytest.approx(want, rel=0.1)
    assert ex.exposure_extrapolated(0.0, fit, space_bits=20.0) == 20.0  # never past ranking first of 2^20
    spec = {"random": {"length": 4, "vocab_size": 19, "excluded_ids": [0, 1, 2]}, "secret": {"digits": 3}}
    assert ex.space_bits(spec, "random") == pytest.approx(16.0) and ex.space_bits(spec, "secret") == \
        pytest.approx(math.log2(1000))


def test_a_memorised_canary_is_exposed_and_extracted_and_a_fresh_draw_is_at_chance():
    """A bigram model that learnt the chain 1 -> 2 -> ... -> 7: that canary has the lowest perplexity of its
    space; random sequences drawn as the candidates are, measured against the others, average 1/ln 2 bits."""
    table = torch.zeros(V, V)
    canary = [1, 2, 3, 4, 5, 6, 7]
    for a, b in zip([0] + canary[:-1], canary):
        table[a, b] = 6.0
    model = Bigram(table)
    rng = np.random.RandomState(1)
    candidates = [list(rng.randint(0, V, size=7)) for _ in range(2000)]
    ref = ex.log_perplexity(model, candidates, context_id=0)
    fit = ex.fit_candidates(ref)
    bits = ex.log_perplexity(model, [canary], context_id=0)[0]
    assert ex.exposure_sampled(bits, ref) == pytest.approx(math.log2(2001))
    assert ex.exposure_extrapolated(bits, fit) > 15
    fresh = ex.log_perplexity(model, [list(rng.randint(0, V, size=7)) for _ in range(400)], context_id=0)
    chance = np.mean([ex.exposure_sampled(b, ref) for b in fresh])
    assert chance == pytest.approx(ex.CHANCE_BITS, abs=0.25)
    assert greedy_matches(model, [canary[:3], [0, 0, 0]], [canary[3:], canary[3:]], context_id=0) == [True, False]


def test_repetition_labels_cover_every_count():
    assert [repetition_label(c) for c in (1, 2, 3, 4, 15, 16, 63, 64, 1000)] == \
        ["1", "2-3", "2-3", "4-15", "4-15", "16-63", "16-63", "64+", "64+"]


def test_passage_memorization_counts_the_greedy_tokens_at_their_positions():
    """The chain 1 -> 2 -> ... -> 7 -> 1: prompted with 1, 2 the model continues 3, 4; a passage that breaks
    the chain after one token agrees on that token only; one shorter than 2k is refused."""
    table = torch.zeros(V, V)
    for a in range(1, V):
        table[a, a % (V - 1) + 1] = 6.0
    model = Bigram(table)
    got = passage_memorization(model, [[1, 2, 3, 4], [1, 2, 3, 6], [5, 6, 1, 2], [4, 5, 0, 0]], k=2, context_id=0)
    assert [r["extracted"] for r in got] == [True, False, False, False]
    assert [r["token_agreement"] for r in got] == [1.0, 0.5, 0.0, 0.0]
    logp = table.log_softmax(-1) / math.log(2)
    assert got[1]["target_bits_per_token"] == pytest.approx(-float(logp[2, 3] + logp[3, 6]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="fewer than 2k"):
        passage_memorization(model, [[1, 2, 3]], k=2, context_id=0)
