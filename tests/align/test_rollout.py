"""Seeded sampling (llm/align/rollout.py `sample_seeded`): a prompt's response depends on its seed, not on the
batch it was sampled in, which is what lets a data-parallel rank sample exactly its slice of debug mode's
rollout batch."""
import torch

from llm.align.rollout import sample, sample_seeded
from llm.config import ModelConfig
from llm.model import Transformer
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

EOS = 2


def _model() -> Transformer:
    return Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_ff=64, vocab_size=40, seq_len=24), seed=1)


def _prompts(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    # Two prompt lengths, interleaved, so both slices below cut across length groups.
    return [torch.randint(3, 40, (4 + i % 2,), generator=g).tolist() for i in range(n)]


def test_a_slice_samples_what_the_whole_batch_samples():
    model, prompts = _model(), _prompts(16)
    seeds = [1000 + j for j in range(16)]
    whole = sample_seeded(model, prompts, 8, 1.0, EOS, seeds)
    for part in (slice(0, 8), slice(8, 16), slice(5, 6)):
        assert sample_seeded(model, prompts[part], 8, 1.0, EOS, seeds[part]) == whole[part]
    # The noise is the seed's: other seeds give other responses (temperature 1 over 40 tokens).
    assert sample_seeded(model, prompts, 8, 1.0, EOS, [s + 1 for s in seeds]) != whole


def test_greedy_matches_generate_and_responses_end_at_the_first_eos():
    model, prompts = _model(), _prompts(6)
    # temperature 0 takes no noise: the KV-cached loop must then reproduce Transformer.generate (via `sample`).
    assert sample_seeded(model, prompts, 8, 0.0, EOS, list(range(6))) == sample(model, prompts, 8, 0.0, EOS)
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.5  # make EOS frequent, so some responses end early
    for r in sample_seeded(model, prompts, 8, 1.0, EOS, list(range(6))):
        assert 1 <= len(r) <= 8 and EOS not in r[:-1]


def test_reward_model_score_is_normalised_clipped_and_lowest_for_an_unfinished_answer():
    from llm.align.rollout import normalised_score
    raw = torch.tensor([1.0, 3.0, 100.0, 3.0])
    ended = torch.tensor([True, True, True, False])
    assert torch.equal(normalised_score(raw, (1.0, 2.0), 5.0, ended), torch.tensor([0.0, 1.0, 5.0, -5.0]))
