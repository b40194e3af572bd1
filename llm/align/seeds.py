"""Named seed streams: every random draw of the alignment chain takes its seed from the recipe's `seed`, the
name of its stream and, for per-item draws, indices (an epoch, a PPO iteration and prompt position).

A draw never picks a number of its own, so two draws cannot share a stream by accident, and a reader finds every
source of randomness in `Stream`. The offsets and index multipliers in `_DERIVATION` are the numbers the stages
used before the streams had names (the accuracy margins in tests/align/test_chain.py were measured with them),
except where two streams shared a seed: SFT_ORDER and RM_ORDER drew the same permutations, TORCH, TOKENIZER and
BASE_PRETRAIN took the recipe's seed as the task data does; each now has an offset of its own, so every stream of
the table is distinct (tests/align/test_seeds.py).

`batch_indices` is the sample order every stage draws its batches in, from an *_ORDER or *_PROMPTS stream.
"""
from __future__ import annotations

from enum import Enum

import torch


class Stream(Enum):
    TASK_DATA = "task_data"
    """The task's prompts, demonstrations and pairs (llm/align/task.py `generate_task_data`)."""
    TOKENIZER = "tokenizer"
    BASE_PRETRAIN = "base_pretrain"
    """The base model's init and data order (llm/train's `train.seed`)."""
    TORCH = "torch"
    """torch's global generator while a stage trains (dropout, when the model has any)."""
    SFT_ORDER = "sft_order"
    """Per-epoch sample permutations (index: the epoch), as the other *_ORDER streams."""
    RM_ORDER = "rm_order"
    RM_SHUFFLED_LABELS = "rm_shuffled_labels"
    """Which pairs the `rm.shuffle_labels` control swaps."""
    RM_POLICY_TRAIN = "rm_policy_train"
    """The SFT model's samples paired for RM training (`rm.policy_samples`)..."""
    RM_POLICY_EVAL = "rm_policy_eval"
    """...and for the RM's held-out pairs."""
    DPO_ORDER = "dpo_order"
    PPO_PROMPTS = "ppo_prompts"
    """The prompts of each rollout batch (index: the iteration, through `batch_indices`' epochs)."""
    PPO_MINIBATCHES = "ppo_minibatches"
    """The mini-batch permutations of every PPO epoch (one generator for the whole stage)."""
    PPO_ROLLOUT = "ppo_rollout"
    """Sampling noise of one rollout prompt (indices: iteration, position in the rollout batch)."""
    GRPO_RLOO_PROMPTS = "grpo_rloo_prompts"
    """The prompts of each `grpo_rloo` rollout (index: the iteration), each sampled grpo_rloo.group_size times."""
    GRPO_RLOO_MINIBATCHES = "grpo_rloo_minibatches"
    GRPO_RLOO_ROLLOUT = "grpo_rloo_rollout"
    """Sampling noise of one `grpo_rloo` rollout sequence (indices: iteration, position in the rollout)."""
    EVAL_CHECKER = "eval_checker"
    """Samples scored by the checker on the held-out prompts (every stage: the same answers for one model)."""
    EVAL_KL = "eval_kl"
    """Samples on which PPO's and DPO's final KL to the reference is measured."""


_ORDER = 7919
_ROLLOUT = 1_000_003
# stream: (offset added to the recipe's seed, multiplier folding in each index); see the module docstring.
_DERIVATION = {
    Stream.TASK_DATA: (0, 0), Stream.TOKENIZER: (2, 0), Stream.BASE_PRETRAIN: (11, 0), Stream.TORCH: (7, 0),
    Stream.SFT_ORDER: (0, _ORDER), Stream.RM_ORDER: (2, _ORDER), Stream.RM_SHUFFLED_LABELS: (1, 0),
    Stream.RM_POLICY_TRAIN: (5, 0), Stream.RM_POLICY_EVAL: (6, 0), Stream.DPO_ORDER: (9, _ORDER),
    Stream.PPO_PROMPTS: (3, _ORDER), Stream.PPO_MINIBATCHES: (100, 0), Stream.PPO_ROLLOUT: (100, _ROLLOUT),
    Stream.EVAL_CHECKER: (12345, 0), Stream.EVAL_KL: (777, 0),
    # Streams added after the first runs: offsets of their own.
    Stream.GRPO_RLOO_PROMPTS: (200, _ORDER), Stream.GRPO_RLOO_MINIBATCHES: (300, 0),
    Stream.GRPO_RLOO_ROLLOUT: (400, _ROLLOUT),
}


def seed_for(seed: int, stream: Stream, *index: int) -> int:
    """The seed of `stream` under the recipe's `seed`, in [0, 2**63) (torch.Generator.manual_seed's range).

    index: the position of one draw within the stream (e.g. the epoch of a sample order); only streams that
    fold indices accept them. Raises ValueError otherwise.
    """
    offset, multiplier = _DERIVATION[stream]
    if index and not multiplier:
        raise ValueError(f"seed stream {stream.name} takes no index, got {index}")
    s = seed + offset
    for i in index:
        s = s * multiplier + i
    return s % 2**63


def batch_indices(n: int, step: int, batch: int, seed: int, stream: Stream) -> list[int]:
    """Indices of the global batch of `step`: consecutive slices of per-epoch permutations of range(n), each seeded
    by (seed, stream, epoch). A pure function of its arguments, so every rank and every layout draws the same
    samples."""
    out: list[int] = []
    pos = step * batch
    while len(out) < batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, stream, epoch))).tolist()
        take = perm[offset:offset + batch - len(out)]
        out += take
        pos += len(take)
    return out
