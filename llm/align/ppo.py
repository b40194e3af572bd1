"""RLHF with PPO (InstructGPT §3.5; Ziegler et al. 2019; Schulman et al. 2017), four models:

- actor: the SFT policy, trained; reference: a frozen copy of it (the KL anchor);
- reward model: the RM, frozen; critic: initialised from the RM, value head included (OpenRLHF and TRL have
  shipped re-initialised critic heads; `build_models` copies the RM's state dict whole and tests check it).

One iteration: sample a rollout batch with the actor's KV cache (`sample_seeded`), score it (old log-probs, reference
log-probs, values, the RM score at the EOS normalised by the RM's saved mean/std and clipped), build per-token
rewards r_t = −β·KL_t plus the score on the last token, GAE(γ, λ) advantages (whitened), then `ppo_epochs`
passes of clipped policy and clipped value updates over mini-batches. β is fixed or adapted towards a KL
target (Ziegler et al. 2019). The checkpoint is evaluated with the checker on held-out prompts, never the RM.

Data parallelism computes debug mode's iteration: each rank samples its contiguous share of the rollout batch
with a noise seed per (iteration, prompt position) (llm/align/seeds.py `Stream.PPO_ROLLOUT`), the shares are
gathered, every statistic (GAE, whitening, rewards, KL for the controller) is taken over the whole batch, each
global mini-batch is split over the ranks, and the losses are normalised by global token counts so the engine's
gradient average is the global mean.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.align import handoff
from llm.align import losses as L
from llm.align.template import encode_prompt
from llm.align.config import AlignConfig
from llm.align.resume import generator_state, set_generator_state
from llm.align.rollout import (RolloutBatch, checker_eval, gathered_logprobs, held_out_kl, make_batch,
                               response_logprobs, reward_model_scores, sample_seeded)
from llm.align.seeds import Stream, batch_indices, seed_for
from llm.align.stages import Stage, StageContext
from llm.train.runtime import Runtime, SingleProcess, check_split, frozen
from llm.align.template import ChatTemplate
from llm.model import RewardModel, Transformer


@dataclass
class PPOModels:
    actor: Transformer
    reference: Transformer
    critic: RewardModel
    reward_model: RewardModel
    reward_stats: tuple[float, float]
    actor_path: Path
    reward_path: Path


def build_models(cfg: AlignConfig, device: torch.device | str = "cpu") -> PPOModels:
    """Load the four models by path onto `device`, refusing an actor and RM that do not share a tokenizer and
    vocabulary."""
    actor_path, rm_path = STAGE.checkpoint_path(cfg, "actor"), STAGE.checkpoint_path(cfg, "reward_model")
    tok = handoff.checkpoint_tokenizer(actor_path)
    a_info, r_info = handoff.read_info(actor_path), handoff.read_info(rm_path)
    handoff.check_compatible(a_info, actor_path, r_info, rm_path)
    stats = handoff.reward_stats(r_info, "ppo.reward_model", rm_path)
    actor, _ = handoff.load_stage(actor_path, "lm", tok.fingerprint())
    reference, _ = handoff.load_stage(actor_path, "lm", tok.fingerprint())
    reward_model, _ = handoff.load_stage(rm_path, "reward", tok.fingerprint())
    critic, _ = handoff.load_stage(rm_path, "reward", tok.fingerprint())
    template = ChatTemplate.from_config(cfg).to_dict()
    handoff.check_template(a_info, actor_path, template)
    handoff.check_template(r_info, rm_path, template)
    actor, reference, critic, reward_model = (x.to(device) for x in (actor, reference, critic, reward_model))
    return PPOModels(actor, frozen(reference), critic, frozen(reward_model), stats, actor_path, rm_path)


@torch.no_grad()
def score_rollout(m: PPOModels, b: RolloutBatch, beta: float, cfg: AlignConfig,
                  runtime: Runtime | None = None) -> dict:
    """Old/reference log-probs, values, normalised clipped scores, per-token rewards, advantages, returns.

    `b` is the global rollout batch. Each rank runs the four forwards on its contiguous share of the rows and
    the results are gathered, so GAE and the whitening statistics are computed over the whole batch, the same
    on every rank and as in debug mode.
    """
    d = runtime or SingleProcess()
    p = cfg.ppo
    mask = b.action_mask
    tokens = b.tokens[d.shard(len(b.tokens))]
    m.actor.eval()
    m.critic.eval()
    old_logp = gathered_logprobs(m.actor, b, d)
    ref_logp = gathered_logprobs(m.reference, b, d)
    values = d.gather_rows(m.critic(tokens)[:, :-1]) * mask
    score = reward_model_scores(m.reward_model, m.reward_stats, p.reward_clip, b, d)
    kl = L.kl_penalty(old_logp, ref_logp, p.kl_estimator) * mask
    rewards = -beta * kl
    # The score is the reward of the last action: the token at last_index, predicted at position last_index − 1.
    rewards[torch.arange(len(score), device=score.device), b.last_index - 1] += score
    adv, returns = L.gae(rewards, values, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        adv = L.whiten(adv, mask)
    return {"old_logp": old_logp, "ref_logp": ref_logp, "values": values, "score": score, "kl": kl,
            "adv": adv, "returns": returns}


def run_ppo(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """PPO from ppo.actor (default <out_dir>/sft) against ppo.reward_model (default <out_dir>/rm); writes
    <out_dir>/ppo. Returns the held-out metrics (checker accuracy, KL to the reference, RM gap)."""
    p = cfg.ppo
    ctx = StageContext(cfg, STAGE, runtime, log_every=5)
    d, tok = ctx.runtime, ctx.tokenizer
    check_split("ppo.mini_batch", p.mini_batch, d.world)
    m = build_models(cfg, d.device)
    eos = tok.eos_id
    prompts = ctx.data("ppo.prompts", "prompt", m.actor.cfg.seq_len)
    prompt_ids = [encode_prompt(tok, ctx.template, r["prompt"]) for r in prompts]
    n_minibatches = p.rollout_batch // p.mini_batch
    total_updates = p.iterations * p.ppo_epochs * n_minibatches
    actor_tr = ctx.trainer(m.actor, p.actor_optim, p.actor_zero_stage, total_updates)
    critic_tr = ctx.trainer(m.critic, p.critic_optim, p.critic_zero_stage, total_updates)
    m.actor, m.critic = actor_tr.module, critic_tr.module
    device = next(m.actor.parameters()).device
    ema = frozen(copy.deepcopy(m.actor)) if p.ema > 0 else None
    kl_ctl = L.AdaptiveKLController(p.beta, p.kl_target, p.kl_horizon)
    # Mini-batch order: one generator, the same on every rank, so a global mini-batch holds the same rows in
    # every layout; each rank trains on its contiguous share of each.
    shuffle = torch.Generator().manual_seed(seed_for(cfg.seed, Stream.PPO_MINIBATCHES))
    start, loop = ctx.resume(p.iterations, {"actor": actor_tr, "critic": critic_tr},
                             {"ema": ema} if ema is not None else {})
    step0_diff = loop.get("step0_diff")
    if start:
        kl_ctl.beta = loop["beta"]
        set_generator_state(loop["shuffle"], shuffle)
    mine = d.shard(p.rollout_batch)
    for it in range(start, p.iterations):
        ids = [prompt_ids[i] for i in batch_indices(len(prompts), it, p.rollout_batch, cfg.seed, Stream.PPO_PROMPTS)]
        # Each prompt's noise is seeded by its global position, not by the rank, so data-parallel rollouts are
        # debug mode's rollouts split into shares.
        seeds = [seed_for(cfg.seed, Stream.PPO_ROLLOUT, it, j) for j in range(p.rollout_batch)]
        responses = d.gather(sample_seeded(m.actor, ids[mine], p.max_new_tokens, p.temperature, eos, seeds[mine]))
        b = make_batch(ids, responses, eos, device)
        r = score_rollout(m, b, kl_ctl.beta, cfg, d)
        if it == 0:
            step0_diff = float((r["old_logp"] - r["ref_logp"]).abs().max())
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_frac": 0.0, "entropy": 0.0}
        for epoch in range(p.ppo_epochs):
            perm = torch.randperm(p.rollout_batch, generator=shuffle)
            for s in range(0, p.rollout_batch, p.mini_batch):
                rows = perm[s:s + p.mini_batch]
                # Each rank divides its token sum by the mini-batch's global token count / world; the engine's
                # gradient average over ranks is then the global token mean, debug mode's gradient.
                n_tokens = float(b.action_mask[rows].sum()) / d.world
                j = rows[d.shard(p.mini_batch)]
                tokens, mask = b.tokens[j], b.action_mask[j]
                actor_tr.train()
                logits = actor_tr(tokens)
                logp = response_logprobs(logits, tokens)
                pl, cf = L.ppo_policy_loss(logp, r["old_logp"][j], r["adv"][j], mask, p.clip_eps, n_tokens)
                actor_tr.step(pl + actor_tr.module.moe_loss())  # + the MoE aux losses (0 when dense), as in SFT
                critic_tr.train()
                v = critic_tr(tokens)[:, :-1]
                vl = L.ppo_value_loss(v, r["values"][j], r["returns"][j], mask, p.value_clip, n_tokens)
                critic_tr.step(vl + critic_tr.module.moe_loss())
                stats["policy_loss"] += float(pl.detach())
                stats["value_loss"] += float(vl.detach())
                stats["clip_frac"] += float(cf)
                stats["entropy"] += float(L.entropy(logits[:, :-1].detach(), mask, n_tokens))
        if ema is not None:
            with torch.no_grad():
                for pe, pa in zip(ema.parameters(), m.actor.parameters()):
                    pe.lerp_(pa.detach(), 1.0 - p.ema)
        kl_seq = float(r["kl"].sum(1).mean())
        row = {"step": it + 1, "reward": float(r["score"].mean()), "kl": kl_seq, "beta": kl_ctl.beta,
               "response_length": float(b.action_mask.sum(1).mean()), "eos_rate": float(b.ended.float().mean())}
        # Rank terms of a global token mean sum to world × that mean (see n_tokens); averaged over the updates.
        row.update({k: d.sum(v) / (d.world * p.ppo_epochs * n_minibatches) for k, v in stats.items()})
        ctx.log.row(row)
        kl_ctl.update(kl_seq, p.rollout_batch)
        ctx.checkpoint(it + 1, {"beta": kl_ctl.beta, "shuffle": generator_state(shuffle), "step0_diff": step0_diff})
    policy = ema if ema is not None else m.actor
    metrics: dict = {"step0_ref_logp_max_abs_diff": step0_diff, "final_beta": kl_ctl.beta, "last_train_row": row}
    if d.is_main:
        metrics.update(checker_eval(cfg, policy, tok, ctx.template, m.reward_model, m.reward_stats))
        metrics.update(held_out_kl(ctx, policy, m.reference))
    return ctx.save(policy, metrics, {"actor": str(m.actor_path), "reward_model": str(m.reward_path)})


STAGE = Stage("ppo", run_ppo, checkpoints={"actor": "sft", "reward_model": "rm"}, data=("ppo.prompts", "eval.prompts"),
              requires="ppo.prompts",
              summary_keys=("checker_accuracy", "kl", "rm_reward", "rm_reward_correct", "rm_reward_wrong",
                            "rm_checker_agreement"))
