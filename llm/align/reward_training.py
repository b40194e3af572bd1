"""The `rm` stage, reward-model training: the SFT transformer with a scalar head on the last (EOS) token
(llm/model.py), trained on checker-labelled pairs with the Bradley–Terry loss
−log σ(r_chosen − r_rejected − margin) (InstructGPT §3.5).

The checkpoint records the mean and std of the RM's scores on held-out responses, so PPO can normalise
rewards (InstructGPT normalises its RM so that demonstrations score 0 on average), and the held-out
pairwise accuracy. `rm.shuffle_labels` is the control: chosen and rejected swapped at random, an RM that
can learn nothing, from which PPO must gain nothing.
"""
from __future__ import annotations

import json
import random

import torch

from llm.align.template import pair_batch
from llm.align.config import AlignConfig
from llm.align.rollout import phase_progress, sample
from llm.align.losses import bradley_terry_loss
from llm.align.reward_functions import RewardFunctions
from llm.model import RewardModel
from llm.align.seeds import Stream, batch_indices, seed_for
from llm.align.stages import Stage, StageContext
from llm.train.runtime import Runtime
from typed_yaml import log


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, tok, template, rows: list[dict], batch_size: int = 128) -> dict:
    """Held-out pairwise accuracy (ties count half), the mean margin, and the score mean/std over all responses."""
    rm.eval()
    correct, margins, scores = 0.0, [], []
    for s in range(0, len(rows), batch_size):
        b = pair_batch(tok, template, rows[s:s + batch_size])
        r = rm.score(b.tokens, b.last_index)
        rc, rr = r[:b.n_pairs], r[b.n_pairs:]
        correct += float((rc > rr).sum() + 0.5 * (rc == rr).sum())
        margins += (rc - rr).tolist()
        scores += r.tolist()
    t = torch.tensor(scores)
    return {"pairwise_accuracy": correct / len(rows), "margin": sum(margins) / len(margins),
            "reward_mean": float(t.mean()), "reward_std": float(t.std().clamp(min=1e-6))}


@torch.no_grad()
def policy_pairs(model, tok, template, prompts: list[dict], reward, correct_reward: float, n_samples: int,
                 max_new_tokens: int, seed: int, batch_size: int = 256, progress=None) -> list[dict]:
    """Pairs of the model's own samples labelled by the eval reward: for each prompt row (llm/align/formats.py
    `prompt`), `n_samples` answers at temperature 1; the first reaching `correct_reward` paired with the first that
    does not (prompts with no such pair, or whose pair is longer than the model's seq_len, are dropped)."""
    from llm.align.template import decode_response, encode_prompt, sft_example

    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ids = [encode_prompt(tok, template, q["prompt"]) for q in prompts]
    answers: list[list[str]] = [[] for _ in prompts]
    for _ in range(n_samples):
        for s in range(0, len(ids), batch_size):
            for k, r in enumerate(sample(model, ids[s:s + batch_size], max_new_tokens, 1.0, tok.eos_id, gen)):
                answers[s + k].append(decode_response(tok, r, template))
            if progress is not None:
                progress.update(len(ids[s:s + batch_size]))
    rows = []
    for q, a in zip(prompts, answers):
        ok = [r >= correct_reward for r in reward([q["raw"]] * len(a), a, [q["fields"]] * len(a))]
        good = [x for x, c in zip(a, ok) if c]
        bad = [x for x, c in zip(a, ok) if not c]
        # A decoded sample can encode to more tokens than were sampled (an id past the tokenizer's pieces decodes
        # as UNK, which encodes as several): a pair that no longer fits the model is dropped like a tie.
        if good and bad and all(len(sft_example(tok, template, q["prompt"], x)[0]) <= model.cfg.seq_len
                                for x in (good[0], bad[0])):
            rows.append({"prompt": q["prompt"], "chosen": good[0], "rejected": bad[0]})
    return rows


def run_rm(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """Train the reward model from rm.init (default <out_dir>/sft); writes <out_dir>/rm. Returns metrics."""
    ctx = StageContext(cfg, STAGE, runtime)
    d, s, tok = ctx.runtime, cfg.rm, ctx.tokenizer
    rm, _ = ctx.load("reward")
    seq_len = rm.cfg.seq_len
    train = ctx.data("rm.data", "pair", seq_len)
    valid = ctx.data("rm.eval_data", "pair", seq_len)
    valid_policy: list[dict] = []
    sources = POLICY_SOURCES
    if s.policy_samples and any(cfg.source(k) is None for k in sources):
        log.info(f"rm: no policy pairs (rm.policy_samples={s.policy_samples} samples the prompts of "
                 f"{' and '.join(sources)}, not both configured)")
    elif s.policy_samples:
        # Sampled on every rank with the same seed, so every rank holds the same pairs.
        policy, _ = ctx.load("lm")
        n = cfg.eval.max_new_tokens
        reward = RewardFunctions(cfg.eval.reward, cfg.eval.reward_weights, cfg.reward_timeout_s,
                                 "stage rm: eval.reward")
        # Each distinct prompt once, in a fixed order (sorted by its JSON: for string prompts, by the text).
        # sft.eval_data holds conversations (what SFT reads); their prompts are sampled, the reply dropped
        # (STAGE.reads_as), so the documented messages format serves both stages.
        prompts = {k: sorted({json.dumps(r["prompt"]): r for r in ctx.data(k, STAGE.data_kind(k), seq_len)}.items())
                   for k in sources}
        phase = phase_progress(cfg, "rm: policy samples", s.policy_samples * sum(map(len, prompts.values())),
                               "sample", d.is_main)
        train = train + policy_pairs(policy, tok, ctx.template, [r for _, r in prompts["ppo.prompts"]], reward,
                                     cfg.eval.correct_reward, s.policy_samples, n,
                                     seed_for(cfg.seed, Stream.RM_POLICY_TRAIN), progress=phase)
        valid_policy = policy_pairs(policy, tok, ctx.template, [r for _, r in prompts["sft.eval_data"]], reward,
                                    cfg.eval.correct_reward, s.policy_samples, n,
                                    seed_for(cfg.seed, Stream.RM_POLICY_EVAL), progress=phase)
    if s.shuffle_labels:
        rng = random.Random(seed_for(cfg.seed, Stream.RM_SHUFFLED_LABELS))
        train = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) if rng.random() < 0.5 else r for r in train]
    trainer = ctx.trainer(rm, s.optim, s.zero_stage, s.steps)
    start, _ = ctx.resume(s.steps, {"model": trainer})
    for step in range(start, s.steps):
        idx = batch_indices(len(train), step, s.batch_size, cfg.seed, Stream.RM_ORDER)[d.shard(s.batch_size)]
        b = pair_batch(tok, ctx.template, [train[i] for i in idx])
        trainer.train()
        values = trainer(b.tokens.to(d.device))
        r = values.gather(1, b.last_index.to(d.device)[:, None]).squeeze(1)
        rc, rr = r[:b.n_pairs], r[b.n_pairs:]
        loss = bradley_terry_loss(rc, rr, s.margin)
        lr = trainer.current_lr()
        grad_norm = trainer.step(loss + trainer.module.moe_loss())  # + the MoE aux loss (0 when dense), as in SFT
        acc = d.sum(float((rc > rr).float().sum())) / s.batch_size
        ctx.log.row({"step": step + 1, "loss": d.sum(float(loss.detach())) / d.world, "train_accuracy": acc,
                     "lr": lr, "grad_norm": grad_norm})
        ctx.checkpoint(step + 1)
    # Held-out accuracy over both kinds of pairs; each kind reported apart too.
    metrics = evaluate_pairs(trainer.module, tok, ctx.template, valid + valid_policy)
    metrics["pairwise_accuracy_demo_pairs"] = evaluate_pairs(trainer.module, tok, ctx.template,
                                                             valid)["pairwise_accuracy"]
    if valid_policy:
        metrics["pairwise_accuracy_policy_pairs"] = evaluate_pairs(trainer.module, tok, ctx.template,
                                                                   valid_policy)["pairwise_accuracy"]
    metrics.update(n_train_pairs=len(train), n_eval_pairs=len(valid) + len(valid_policy))
    log.info(f"rm: held-out pairwise accuracy {metrics['pairwise_accuracy']:.3f}")
    return ctx.save(trainer.module, metrics, {"init": str(ctx.init), "reward_mean": metrics["reward_mean"],
                                              "reward_std": metrics["reward_std"], "shuffle_labels": s.shuffle_labels})


POLICY_SOURCES = ("ppo.prompts", "sft.eval_data")
"""Whose prompts rm.policy_samples samples: the training prompts, and the held-out ones (sft.eval_data's
conversations, read with their reply dropped: llm/align/formats.py `conversation_prompt`)."""


def _reads(cfg: AlignConfig, key: str) -> bool:
    """The prompts of POLICY_SOURCES are read only when policy pairs are sampled: rm.policy_samples > 0 and both
    configured."""
    return key not in POLICY_SOURCES or bool(cfg.rm.policy_samples and
                                             all(cfg.source(k) is not None for k in POLICY_SOURCES))


STAGE = Stage("rm", run_rm, checkpoints={"init": "sft"}, data=("rm.data", "rm.eval_data") + POLICY_SOURCES,
              requires="rm.data", summary_keys=("pairwise_accuracy",), reads=_reads,
              reads_as={"sft.eval_data": "conversation_prompt"})
