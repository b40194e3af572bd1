"""Direct preference optimisation (Rafailov et al. 2023, arXiv:2305.18290): the alternative third stage.

The policy starts from SFT; a frozen copy is the reference. Same pairs as the reward model (jsonl of
{prompt, chosen, rejected}, checker-labelled); loss −log σ(β·[(log π − log π_ref)(chosen) − (…)(rejected)])
on sequence log-probs summed over response tokens (prompt masked). Evaluated like PPO: checker accuracy on
held-out prompts and KL(π ‖ π_ref) of sampled answers.
"""
from __future__ import annotations

import torch

from llm.align import losses as L
from llm.align.template import pair_batch
from llm.align.config import AlignConfig
from llm.align.rollout import checker_eval, held_out_kl
from llm.align.seeds import Stream, batch_indices
from llm.align.stages import Stage, StageContext
from llm.train.runtime import Runtime, frozen


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(batch,) Σ over response tokens of log p(target); logits (batch, width, vocab), targets (batch, width−1)."""
    return L.token_logprobs(logits[:, :-1], targets).sum(1)


def run_dpo(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """DPO from dpo.init (default <out_dir>/sft); writes <out_dir>/dpo. Returns held-out metrics."""
    ctx = StageContext(cfg, STAGE, runtime)
    d, s, tok = ctx.runtime, cfg.dpo, ctx.tokenizer
    policy, _ = ctx.load("lm")
    reference = frozen(ctx.load("lm")[0])
    train = ctx.data("dpo.data", "pair", policy.cfg.seq_len)
    trainer = ctx.trainer(policy, s.optim, s.zero_stage, s.steps)
    start, _ = ctx.resume(s.steps, {"model": trainer})
    for step in range(start, s.steps):
        idx = batch_indices(len(train), step, s.batch_size, cfg.seed, Stream.DPO_ORDER)[d.shard(s.batch_size)]
        b = pair_batch(tok, ctx.template, [train[i] for i in idx])
        tokens, targets = b.tokens.to(d.device), b.targets.to(d.device)
        trainer.train()
        lp = sequence_logprobs(trainer(tokens), targets)
        with torch.no_grad():
            ref = sequence_logprobs(reference(tokens), targets)
        n = b.n_pairs
        loss, margin = L.dpo_loss(lp[:n], lp[n:], ref[:n], ref[n:], s.beta)
        lr = trainer.current_lr()
        grad_norm = trainer.step(loss + trainer.module.moe_loss())  # + the MoE aux loss (0 when dense), as in SFT
        ctx.log.row({"step": step + 1, "loss": d.sum(float(loss.detach())) / d.world,
                     "reward_margin": d.sum(float(margin.mean())) / d.world,
                     "reward_accuracy": d.sum(float((margin > 0).float().sum())) / s.batch_size,
                     "lr": lr, "grad_norm": grad_norm})
        ctx.checkpoint(step + 1)
    metrics: dict = {}
    model = trainer.module
    if d.is_main:
        metrics.update(checker_eval(cfg, model, tok, ctx.template))
        metrics.update(held_out_kl(ctx, model, reference))
    return ctx.save(model, metrics, {"init": str(ctx.init)})


STAGE = Stage("dpo", run_dpo, checkpoints={"init": "sft"}, data=("dpo.data", "eval.prompts"), requires="dpo.data",
              summary_keys=("checker_accuracy", "kl"))
