"""The held-out evaluation every stage reports: eval reward and checker accuracy on the held-out prompts (with a
reward model, its normalised score and its agreement with the eval reward: the gap that exposes reward hacking),
and a policy's KL to its reference on samples of those prompts.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from data_pipeline.tokenizer import Tokenizer
from llm.align.template import decode_response, encode_prompt
from llm.align.config import AlignConfig
from llm.align.rollout import make_batch, sample, sequence_kl
from llm.align.seeds import Stream, seed_for
from llm.model import Transformer
from typed_yaml import log

if TYPE_CHECKING:
    from llm.align.stages import StageContext


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
