"""What every method does with a rollout, written once below the methods (none imports another): sampling
responses with the model's KV-cached `generate()`, padding them into batches, their log-probabilities and KL to
the reference, the reward model's normalised scores; and the held-out evaluation every stage reports, built from
them (eval reward and checker accuracy on the held-out prompts; with a reward model, its normalised score and its
agreement with the eval reward: the gap that exposes reward hacking; a policy's KL to its reference). The check
that a checkpoint is a reward model is llm/align/handoff.py `reward_stats`, the mini-batch check
llm/train/runtime.py `check_split`.

A response is the generated tokens up to and including the first EOS (or all max_new_tokens if none came).
Every tensor is made on the model's device (the sampling noise and generators too): the one host round trip of a
rollout is the sampled ids, which the reward functions read as text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from data_pipeline.tokenizer import PAD_ID, Tokenizer
from llm.align.config import AlignConfig
from llm.align.losses import token_logprobs
from llm.align.seeds import Stream, seed_for
from llm.align.template import decode_response, encode_prompt, group_by_length
from llm.model import Transformer
from typed_yaml import log

if TYPE_CHECKING:
    from llm.align.stages import StageContext


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
def gathered_logprobs(model: Transformer, b: RolloutBatch, runtime) -> torch.Tensor:
    """(batch, width − 1) log-probs of the global rollout `b`'s response tokens under `model` (0 elsewhere): each
    rank scores its contiguous share of the rows and the shares are gathered, so every rank holds them all."""
    rows = runtime.shard(len(b.tokens))
    tokens = b.tokens[rows]
    return runtime.gather_rows(response_logprobs(model(tokens), tokens)) * b.action_mask


@torch.no_grad()
def reward_model_scores(reward_model, stats: tuple[float, float], clip: float, b: RolloutBatch, runtime
                        ) -> torch.Tensor:
    """(batch,) normalised, clipped RM scores of the global rollout `b` (llm/model.py
    `normalised_score`), each rank scoring its share as `gathered_logprobs`."""
    rows = runtime.shard(len(b.tokens))
    raw = runtime.gather_rows(reward_model.score(b.tokens[rows], b.last_index[rows]))
    return normalised_score(raw, stats, clip, b.ended)


def normalised_score(raw: torch.Tensor, stats: tuple[float, float], clip: float, ended: torch.Tensor) -> torch.Tensor:
    """The reward PPO and the grpo_rloo stage take from the RM: its raw score normalised by the (mean, std) it recorded
    on held-out responses (llm/align/handoff.py `reward_stats`; InstructGPT normalises its RM so that demonstrations
    score 0), clipped to ±clip. The RM only ever scored EOS-terminated answers; an unfinished one (`ended` False)
    gets the lowest score, -clip, instead of the RM's extrapolation (which PPO otherwise learns to exploit; TRL's
    `missing_eos_penalty` does the same)."""
    mean, std = stats
    score = ((raw - mean) / std).clamp(-clip, clip)
    return torch.where(ended, score, torch.full_like(score, -clip))


# The held-out evaluation.

@torch.no_grad()
def evaluate_checker(model: Transformer, tok: Tokenizer, template, prompts: list[dict], reward, correct_reward: float,
                     max_new_tokens: int, temperature: float, seed: int, reward_model=None,
                     reward_stats: tuple[float, float] = (0.0, 1.0), batch_size: int = 128, progress=None) -> dict:
    """The eval reward of `model` on held-out prompt rows (llm/align/formats.py `prompt`; samples at `temperature`,
    a fixed seed): its mean (eval_reward) and the share of answers reaching `correct_reward` (checker_accuracy), the
    mean response length, and with a reward model the normalised RM score overall, on correct and on wrong
    answers, and the RM/eval-reward agreement (RM score > 0 ⇔ correct): the gap that exposes reward hacking.
    reward: llm/align/reward_functions.py RewardFunctions. progress: a llm/train/progress.py Progress fed per batch
    sampled."""
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


def checker_eval(cfg: AlignConfig, model, tok: Tokenizer, template, reward_model=None, reward_stats=(0.0, 1.0)
                 ) -> dict:
    """Eval reward, checker accuracy (and RM gap) of `model` on the held-out prompts (eval.prompts, scored by
    eval.reward), as every stage reports it; {} when there are none (task.name: none, eval.prompts null)."""
    from llm.align.formats import load
    from llm.align.reward_functions import RewardFunctions
    if cfg.source("eval.prompts") is None:
        return {}
    prompts = load(cfg.source("eval.prompts"), "prompt", template, tok, model.cfg.seq_len, cfg.bad_rows).rows
    reward = RewardFunctions(cfg.eval.reward, cfg.eval.reward_weights, cfg.reward_timeout_s, "eval.reward")
    return evaluate_checker(model, tok, template, prompts, reward, cfg.eval.correct_reward, cfg.eval.max_new_tokens,
                            cfg.eval.temperature,
                            seed=seed_for(cfg.seed, Stream.EVAL_CHECKER), reward_model=reward_model,
                            reward_stats=reward_stats, progress=phase_progress(cfg, "eval checker", len(prompts)))


def phase_progress(cfg: AlignConfig, name: str, total: int, unit: str = "prompt", is_main: bool | None = None):
    """A progress line (llm/train/progress.py) for a sampling phase outside a stage's training loop (the held-out
    checker evaluation, the RM's policy samples): minutes on a CPU, silent before. Written to the console
    (typed_yaml/log.py `info`) and <out_dir>/logs/progress.log by the main rank (typed_yaml/log.py's, when `is_main`
    is not given)."""
    from llm.train.progress import Progress
    main = log.is_main() if is_main is None else is_main
    return Progress(name, total, unit, log=log.info, log_file=Path(cfg.out_dir) / "logs" / "progress.log",
                    enabled=main)


def held_out_kl(ctx: StageContext, policy: Transformer, reference: Transformer) -> dict:
    """{"kl": KL(π ‖ π_ref)} on samples of the held-out prompts (the same seed for every stage), or {} without
    held-out prompts."""
    cfg, tok = ctx.cfg, ctx.tokenizer
    rows = ctx.data("eval.prompts", "prompt", policy.cfg.seq_len)
    if rows is None:
        return {}
    ids = [encode_prompt(tok, ctx.template, r["prompt"]) for r in rows]
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed_for(cfg.seed, Stream.EVAL_KL))
    b = make_batch(ids, sample(policy, ids, cfg.eval.max_new_tokens, cfg.eval.temperature, tok.eos_id, gen),
                   tok.eos_id, device)
    return {"kl": sequence_kl(policy, reference, b)}
