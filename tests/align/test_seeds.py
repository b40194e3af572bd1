"""Named seed streams (llm/align/seeds.py): the seeds the stages drew before the streams had names, and no two
streams of the table alike."""
import pytest

from llm.align.seeds import _DERIVATION, Stream, seed_for

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_every_stream_has_a_distinct_entry_in_the_table():
    # The table is every stream's one definition: an offset of its own (two streams with the same offset and
    # multiplier would draw the same numbers), and streams folding indices the same way differ in their offset.
    assert set(_DERIVATION) == set(Stream)
    entries = list(_DERIVATION.values())
    assert len(set(entries)) == len(entries), _DERIVATION
    for multiplier in {m for _, m in entries}:
        offsets = [o for o, m in entries if m == multiplier]
        assert len(set(offsets)) == len(offsets), (multiplier, offsets)


@pytest.mark.parametrize("seed", [0, 3, 1234])
def test_seed_streams_keep_the_previous_seeds(seed):
    # The offsets the stages added to the recipe's seed before the streams had names (kept: same runs).
    # Except where two streams shared a seed (TORCH and BASE_PRETRAIN with TASK_DATA, RM_ORDER with SFT_ORDER): see
    # test_every_named_seed_stream_differs.
    for stream, offset in [(Stream.TASK_DATA, 0), (Stream.TORCH, 7), (Stream.RM_SHUFFLED_LABELS, 1),
                           (Stream.RM_POLICY_TRAIN, 5), (Stream.RM_POLICY_EVAL, 6), (Stream.PPO_MINIBATCHES, 100),
                           (Stream.EVAL_KL, 777), (Stream.EVAL_CHECKER, 12345)]:
        assert seed_for(seed, stream) == seed + offset, stream
    for stream, offset in [(Stream.SFT_ORDER, 0), (Stream.RM_ORDER, 2), (Stream.PPO_PROMPTS, 3), (Stream.DPO_ORDER, 9)]:
        assert seed_for(seed, stream, 4) == (seed + offset) * 7919 + 4, stream
    assert seed_for(seed, Stream.PPO_ROLLOUT, 2, 7) == (((seed + 100) * 1_000_003 + 2) * 1_000_003 + 7) % 2**63
    with pytest.raises(ValueError, match="EVAL_KL takes no index"):
        seed_for(seed, Stream.EVAL_KL, 1)


@pytest.mark.parametrize("seed", [0, 3, 1234])
def test_every_named_seed_stream_differs(seed):
    # Independent streams: no two give the same seed for the same recipe seed and the same indices (SFT_ORDER and
    # RM_ORDER once drew the same permutations; TASK_DATA, TOKENIZER, TORCH and BASE_PRETRAIN the same seed).
    def takes_index(stream):
        try:
            seed_for(seed, stream, 0)
        except ValueError:
            return False
        return True

    unindexed = [s for s in Stream if not takes_index(s)]
    indexed = [s for s in Stream if takes_index(s)]
    assert len({seed_for(seed, s) for s in unindexed}) == len(unindexed), unindexed
    for index in [(0,), (1,), (4,), (0, 0), (2, 7)]:
        seeds = [seed_for(seed, s, *index) for s in indexed]
        assert len(set(seeds)) == len(indexed), (index, dict(zip(indexed, seeds)))
