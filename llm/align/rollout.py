"""Sampling responses with the model's KV-cached `generate()`, padding them into batches, and the checker
evaluation every stage reports.

A response is the generated tokens up to and including the first EOS (or all max_new_tokens if none came).
Every tensor is made on the model's device (the sampling noise and generators too): the one host round trip of a
rollout is the sampled ids, which the reward functions read as text.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.tokenizer import PAD_ID, Tokenizer
from llm.align.data import decode_response, encode_prompt, group_by_length
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


@torch.no_grad()
def evaluate_checker(model: Transformer, tok: Tokenizer, template, prompts: list[dict], reward, correct_reward: float,
                     max_new_tokens: int, temperature: float, seed: int, reward_model=None,
                     reward_stats: tuple[float, float] = (0.0, 1.0), batch_size: int = 128, progress=None) -> dict:
    """The eval reward of `model` on held-out prompt rows (llm/align/formats.py `prompt`; samples at `temperature`,
    a fixed seed): its mean (eval_reward) and the share of answers reaching `correct_reward` (checker_accuracy), the
    mean response length, and with a reward model the normalised RM score overall, on correct and on wrong
    answers, and the RM/eval-reward agreement (RM score > 0 ⇔ correct): the gap that exposes reward hacking.
    reward: llm/align/rewards.py RewardFunctions. progress: a llm/train/progress.py Progress fed per batch sampled."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    prompt_ids = [encode_prompt(tok, template, p["prompt"]) for p in prompts]
    responses: list[list[int]] = []
    for s in range(0, len(prompts), batch_size):
        responses += sample(model, prompt_ids[s:s + batch_size], max_new_tokens, temperature, tok.eos_id, gen)
        if progress is not None:
            progress.update(len(prompt_ids[s:s + batch_size]))
    rewards = reward([p["raw"] for p in prompts], [decode_response(tok, r, template) for r in responses],
                     [p["fields"] for p in prompts])
    correct = [r >= correct_reward for r in rewards]
    out = {"checker_accuracy": sum(correct) / len(correct), "eval_reward": sum(rewards) / len(rewards),
           "response_length": sum(len(r) for r in responses) / len(responses)}
    if reward_model is not None:
        b = make_batch(prompt_ids, responses, tok.eos_id, next(reward_model.parameters()).device)
        mean, std = reward_stats
        scores = (reward_model.score(b.tokens, b.last_index) - mean) / std
        scores = torch.where(b.ended, scores, torch.full_like(scores, float("-inf"))).clamp(min=-5.0).tolist()
        good = [s for s, c in zip(scores, correct) if c]
        bad = [s for s, c in zip(scores, correct) if not c]
        out.update(rm_reward=sum(scores) / len(scores),
                   rm_reward_correct=sum(good) / len(good) if good else None,
                   rm_reward_wrong=sum(bad) / len(bad) if bad else None,
                   rm_checker_agreement=sum((s > 0) == c for s, c in zip(scores, correct)) / len(scores))
    return out
