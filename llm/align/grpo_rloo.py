"""The critic-free RL stage `grpo_rloo`: GRPO (Shao et al. 2024) or RLOO (Ahmadian et al. 2024) from the SFT policy.

Two models: the actor, trained, and a frozen copy of it, the reference; a reward model only when `grpo_rloo.reward`
lists
'rm'. No critic, no GAE: each iteration samples `group_size` answers to each of `prompts_per_iteration` prompts,
scores them with the reward functions (llm/align/reward_functions.py; the bundled task's checker by default) and/or
the RM, and turns each group's rewards into one advantage per answer (llm/align/losses.py): GRPO's group-normalised
reward with the KL to the reference as a loss term, or RLOO's leave-one-out baseline of the KL-penalised reward.
Then `epochs` passes of clipped updates over mini-batches of sequences. Evaluated like PPO: eval reward and checker
accuracy on held-out prompts, KL to the reference, response length.

Data parallelism as in PPO (llm/align/ppo.py), through the same helpers (llm/align/rollout.py): each rank samples
its contiguous share of the rollout with a noise seed per (iteration, position), the shares are gathered, rewards
and group statistics are computed over the whole rollout on every rank, and each global mini-batch is split over
the ranks with losses normalised by global counts.
"""
from __future__ import annotations

import torch

from llm.align import handoff
from llm.align import losses as L
from llm.align.template import decode_response, encode_prompt
from llm.align.config import AlignConfig
from llm.align.resume import generator_state, set_generator_state
from llm.align.reward_functions import RM, RewardFunctions
from llm.align.rollout import (checker_eval, gathered_logprobs, held_out_kl, make_batch, response_logprobs,
                               reward_model_scores, sample_seeded)
from llm.align.seeds import Stream, batch_indices, seed_for
from llm.align.stages import Stage, StageContext
from llm.train.runtime import Runtime, check_split, frozen
from typed_yaml import log


class Rewards:
    """grpo_rloo.reward: the weighted reward functions plus, with 'rm', the weighted normalised RM score (an answer that
    did not end with EOS gets -ppo.reward_clip from the RM, as in PPO)."""

    def __init__(self, cfg: AlignConfig, ctx: StageContext):
        r = cfg.grpo_rloo
        weights = r.reward_weights or [1.0] * len(r.reward)
        fns = [(s, w) for s, w in zip(r.reward, weights) if s != RM]
        self.functions = RewardFunctions([s for s, _ in fns], [w for _, w in fns], cfg.reward_timeout_s,
                                         "stage grpo_rloo: grpo_rloo.reward") if fns else None
        self.rm_weight = sum(w for s, w in zip(r.reward, weights) if s == RM)
        self.rm, self.stats, self.clip = None, (0.0, 1.0), cfg.ppo.reward_clip
        if RM in r.reward:
            rm, info = ctx.load("reward", "reward_model")
            path = STAGE.checkpoint_path(cfg, "reward_model")
            self.stats = handoff.reward_stats(info, "grpo_rloo.reward_model", path)
            self.rm = frozen(rm)

    @torch.no_grad()
    def __call__(self, rows: list[dict], texts: list[str], b, d) -> torch.Tensor:
        """(batch,) rewards of the global rollout `b` (rows: its prompt rows, texts: the decoded answers), on b's
        device."""
        total = torch.zeros(len(texts), device=b.tokens.device)
        if self.functions is not None:
            total += torch.tensor(self.functions([r["raw"] for r in rows], texts, [r["fields"] for r in rows]),
                                  device=b.tokens.device)
        if self.rm is not None:
            total += self.rm_weight * reward_model_scores(self.rm, self.stats, self.clip, b, d)
        return total


def run_grpo_rloo(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """GRPO or RLOO from grpo_rloo.actor (default <out_dir>/sft); writes <out_dir>/grpo_rloo. Returns the held-out
    metrics."""
    r = cfg.grpo_rloo
    ctx = StageContext(cfg, STAGE, runtime, log_every=5)
    d, tok, template = ctx.runtime, ctx.tokenizer, ctx.template
    check_split("grpo_rloo.mini_batch", r.mini_batch, d.world)
    actor, _ = ctx.load("lm")
    reference = frozen(ctx.load("lm")[0])
    rewards = Rewards(cfg, ctx)
    eos = tok.eos_id
    prompts = ctx.data("grpo_rloo.prompts", "prompt", actor.cfg.seq_len)
    prompt_ids = [encode_prompt(tok, template, p["prompt"]) for p in prompts]
    n_rollout = r.prompts_per_iteration * r.group_size
    n_minibatches = n_rollout // r.mini_batch
    trainer = ctx.trainer(actor, r.optim, r.zero_stage, r.iterations * r.epochs * n_minibatches)
    actor = trainer.module
    device = next(actor.parameters()).device
    # The mini-batch order stays a host generator (its state is resumed; every device draws the same order).
    shuffle = torch.Generator().manual_seed(seed_for(cfg.seed, Stream.GRPO_RLOO_MINIBATCHES))
    start, loop = ctx.resume(r.iterations, {"actor": trainer})
    if start:
        set_generator_state(loop["shuffle"], shuffle)
    mine = d.shard(n_rollout)
    silent = 0  # iterations of this run in which every group's rewards were equal: no advantage, nothing learned
    for it in range(start, r.iterations):
        # Group-major: answer j to prompt i sits at i * group_size + j.
        chosen = batch_indices(len(prompts), it, r.prompts_per_iteration, cfg.seed, Stream.GRPO_RLOO_PROMPTS)
        rows = [prompts[i] for i in chosen for _ in range(r.group_size)]
        ids = [prompt_ids[i] for i in chosen for _ in range(r.group_size)]
        seeds = [seed_for(cfg.seed, Stream.GRPO_RLOO_ROLLOUT, it, j) for j in range(n_rollout)]
        responses = d.gather(sample_seeded(actor, ids[mine], r.max_new_tokens, r.temperature, eos, seeds[mine]))
        b = make_batch(ids, responses, eos, device)
        mask = b.action_mask
        reward = rewards(rows, [decode_response(tok, x, template) for x in responses], b, d)
        actor.eval()
        old_logp = gathered_logprobs(actor, b, d)
        ref_logp = gathered_logprobs(reference, b, d)
        kl_seq = ((old_logp - ref_logp) * mask).sum(1)
        if r.algorithm == "rloo":
            adv = L.rloo_advantages((reward - r.beta * kl_seq).view(-1, r.group_size))
        else:
            adv = L.group_advantages(reward.view(-1, r.group_size), scale=r.loss_type == "grpo")
        stats = {"loss": 0.0, "clip_frac": 0.0}
        for _ in range(r.epochs):
            perm = torch.randperm(n_rollout, generator=shuffle)
            for s in range(0, n_rollout, r.mini_batch):
                j = perm[s:s + r.mini_batch][d.shard(r.mini_batch)]
                n_seq = r.mini_batch / d.world  # global count / world: the engine's average is the global mean
                trainer.train()
                logp = response_logprobs(trainer(b.tokens[j]), b.tokens[j])
                if r.algorithm == "rloo":
                    loss, cf = L.rloo_loss(logp, old_logp[j], adv[j], mask[j], r.clip_eps, n_seq)
                else:
                    loss, cf = L.grpo_loss(logp, old_logp[j], ref_logp[j], adv[j], mask[j], r.clip_eps, r.beta,
                                            n_seq, r.loss_type == "dr_grpo", r.max_new_tokens)
                trainer.step(loss + trainer.module.moe_loss())  # + the MoE aux loss (0 when dense), as in SFT
                stats["loss"] += float(loss.detach())
                stats["clip_frac"] += float(cf)
        # TRL's frac_reward_zero_std: a group whose answers all score the same has zero advantage under GRPO and
        # RLOO alike (RLOO's KL term aside), so a rollout where every group is so teaches the policy nothing.
        zero_std = float((reward.view(-1, r.group_size).std(1) == 0).float().mean())
        if zero_std == 1.0:
            silent += 1
            if silent == 1:
                # As log.warning would word it, but with the stage first (the line tests/align/test_preflight.py reads).
                log.info(f"grpo_rloo: warning: iteration {it + 1}: every group's {r.group_size} answers got the same "
                         f"reward (mean {float(reward.mean()):.3g}): no advantage, no learning signal. The policy "
                         f"never (or always) reaches the reward: check grpo_rloo.reward on the starting model's "
                         f"answers, or raise grpo_rloo.group_size or grpo_rloo.temperature")
        row = {"step": it + 1, "reward": float(reward.mean()), "kl": float(kl_seq.mean()),
               "response_length": float(mask.sum(1).mean()), "eos_rate": float(b.ended.float().mean()),
               "frac_reward_zero_std": zero_std}
        row.update({k: d.sum(v) / (d.world * r.epochs * n_minibatches) for k, v in stats.items()})
        ctx.log.row(row)
        ctx.checkpoint(it + 1, {"shuffle": generator_state(shuffle)})
    # Counted over every logged row (a resumed run's restored ones too), so a resumed stage reports what an
    # uninterrupted one does.
    without = sum(x.get("frac_reward_zero_std") == 1.0 for x in ctx.log.rows)
    if without:
        log.info(f"grpo_rloo: {without} of {r.iterations} iterations had no learning signal (every group's "
                 "rewards equal)")
    metrics: dict = {"last_train_row": row, "iterations_without_signal": without}
    if d.is_main:
        metrics.update(checker_eval(cfg, actor, tok, template, rewards.rm, rewards.stats))
        metrics.update(held_out_kl(ctx, actor, reference))
    return ctx.save(actor, metrics, {"actor": str(ctx.init), "algorithm": r.algorithm})


STAGE = Stage("grpo_rloo", run_grpo_rloo, checkpoints={"actor": "sft", "reward_model": "rm"},
              data=("grpo_rloo.prompts", "eval.prompts"),
              requires="grpo_rloo.prompts",
              summary_keys=("checker_accuracy", "eval_reward", "kl", "response_length"),
              reads=lambda cfg, key: key != "reward_model" or RM in cfg.grpo_rloo.reward)
