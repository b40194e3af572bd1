"""What every RL method does with a rollout, written once below the methods (none imports another): sampling
responses with the model's KV-cached `generate()`, padding them into batches, their log-probabilities and KL to
the reference, the reward model's normalised scores. The check that a checkpoint is a reward model is
llm/align/handoff.py `reward_stats`, the mini-batch check llm/align/strategy.py `check_split`.

A response is the generated tokens up to and including the first EOS (or all max_new_tokens if none came).
Every tensor is made on the model's device (the sampling noise and generators too): the one host round trip of a
rollout is the sampled ids, which the reward functions read as text.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.tokenizer import PAD_ID
from llm.align.template import group_by_length
from llm.align.losses import token_logprobs
from llm.align.reward_model import normalised_score
from llm.model import Transformer


@torch.no_grad()
def sample(model: Transformer, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float,
           eos_id: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """One response (token ids, EOS included when emitted) per prompt, in prompt order."""
    out: list[list[int]] = [[] for _ in prompt_ids]
    device = next(model.parameters()).device
    for length, idx in sorted(group_by_length(prompt_ids).items()):
        prompts = torch.tensor([prompt_ids[i] for i in idx], device=device)
        seqs = model.generate(prompts, max_new_tokens, temperature=temperature, eos_id=eos_id, generator=generator)
        for row, i in zip(seqs[:, length:].tolist(), idx):
            out[i] = row[:row.index(eos_id) + 1] if eos_id in row else row
    return out


@torch.no_grad()
def sample_seeded(model: Transformer, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float,
                  eos_id: int, seeds: list[int]) -> list[list[int]]:
    """Like `sample`, but prompt i draws its noise from a generator seeded with seeds[i], so its response does
    not depend on which other prompts share the batch: a data-parallel rank sampling its slice of a rollout
    batch gets the same tokens as debug mode sampling the whole batch (up to fp32 rounding of the logits,
    which moves a draw only if it lands within ~1e-7 of a category boundary).

    Gumbel-max (argmax of logits/T + Gumbel noise) samples exactly softmax(logits/T) and takes its noise, one
    (max_new_tokens, vocab) block per prompt, up front. temperature=0 is greedy. Rows that emitted EOS keep
    emitting it, as in `Transformer.generate`.
    """
    out: list[list[int]] = [[] for _ in prompt_ids]
    device = next(model.parameters()).device
    vocab = model.cfg.vocab_size
    was_training = model.training
    model.eval()
    for t, idx in sorted(group_by_length(prompt_ids).items()):
        steps = min(max_new_tokens, model.cfg.seq_len - t)
        if steps <= 0:
            continue
        u = torch.stack([torch.rand(steps, vocab, device=device,
                                    generator=torch.Generator(device=device).manual_seed(seeds[i])) for i in idx])
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
        caches = model.new_caches(len(idx), t + steps)
        logits = model(torch.tensor([prompt_ids[i] for i in idx], device=device), caches, 0)[:, -1].float()
        done = torch.zeros(len(idx), dtype=torch.bool, device=device)
        rows: list[torch.Tensor] = []
        for k in range(steps):
            nxt = logits.argmax(-1) if temperature == 0 else (logits / temperature + gumbel[:, k]).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
            rows.append(nxt)
            if bool(done.all()) or k == steps - 1:
                break
            logits = model(nxt[:, None], caches, t + k)[:, -1].float()
        for row, i in zip(torch.stack(rows, 1).tolist(), idx):
            out[i] = row[:row.index(eos_id) + 1] if eos_id in row else row
    model.train(was_training)
    return out


@dataclass
class RolloutBatch:
    """Prompt + response rows, right-padded. Position p of `tokens` is predicted by logits at p − 1, so the
    response token k of row i (k = 0..len−1) is tokens[i, P_i + k], scored by logits[i, P_i + k − 1]."""

    tokens: torch.Tensor
    """(batch, width) int64, PAD after each row's end."""
    action_mask: torch.Tensor
    """(batch, width − 1) float: 1 where logits[:, j] predict a response token (j = P_i − 1 … end − 2)."""
    last_index: torch.Tensor
    """(batch,) position of each row's last token (EOS when emitted), where the RM reads its score."""
    ended: torch.Tensor
    """(batch,) bool: the response closed with EOS."""


def make_batch(prompt_ids: list[list[int]], responses: list[list[int]], eos_id: int,
               device: torch.device | str = "cpu") -> RolloutBatch:
    """The padded batch of prompts + responses, its tensors made on `device` (the model's) from host lists, one
    transfer each."""
    width = max(len(p) + len(r) for p, r in zip(prompt_ids, responses))
    seqs = [p + r for p, r in zip(prompt_ids, responses)]
    tokens = [s + [PAD_ID] * (width - len(s)) for s in seqs]
    mask = [[0.0] * (len(p) - 1) + [1.0] * len(r) + [0.0] * (width - len(s)) for p, r, s in
            zip(prompt_ids, responses, seqs)]
    return RolloutBatch(torch.tensor(tokens, dtype=torch.long, device=device),
                        torch.tensor(mask, dtype=torch.float32, device=device),
                        torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long, device=device),
                        torch.tensor([bool(r) and r[-1] == eos_id for r in responses], dtype=torch.bool, device=device))


def response_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(batch, width − 1) log-probs of tokens[:, 1:] under logits[:, :-1] (mask to the response afterwards)."""
    return token_logprobs(logits[:, :-1], tokens[:, 1:])


@torch.no_grad()
def sequence_kl(actor: Transformer, reference: Transformer, b: RolloutBatch) -> float:
    """Mean over sequences of Σ_t (log π − log π_ref) on responses sampled from π: KL(π ‖ π_ref) in nats."""
    lp = response_logprobs(actor(b.tokens), b.tokens)
    ref = response_logprobs(reference(b.tokens), b.tokens)
    return float(((lp - ref) * b.action_mask).sum(1).mean())


@torch.no_grad()
def gathered_logprobs(model: Transformer, b: RolloutBatch, strategy) -> torch.Tensor:
    """(batch, width − 1) log-probs of the global rollout `b`'s response tokens under `model` (0 elsewhere): each
    rank scores its contiguous share of the rows and the shares are gathered, so every rank holds them all."""
    rows = strategy.shard(len(b.tokens))
    tokens = b.tokens[rows]
    return strategy.gather_rows(response_logprobs(model(tokens), tokens)) * b.action_mask


@torch.no_grad()
def reward_model_scores(reward_model, stats: tuple[float, float], clip: float, b: RolloutBatch, strategy
                        ) -> torch.Tensor:
    """(batch,) normalised, clipped RM scores of the global rollout `b` (llm/align/reward_model.py
    `normalised_score`), each rank scoring its share as `gathered_logprobs`."""
    rows = strategy.shard(len(b.tokens))
    raw = strategy.gather_rows(reward_model.score(b.tokens[rows], b.last_index[rows]))
    return normalised_score(raw, stats, clip, b.ended)
