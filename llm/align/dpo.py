"""Direct preference optimisation (Rafailov et al. 2023, arXiv:2305.18290): the alternative third stage.

The policy starts from SFT; a frozen copy is the reference. Same pairs as the reward model (jsonl of
{prompt, chosen, rejected}, checker-labelled); loss −log σ(β·[(log π − log π_ref)(chosen) − (…)(rejected)])
on sequence log-probs summed over response tokens (prompt masked). Evaluated like PPO: checker accuracy on
held-out prompts and KL(π ‖ π_ref) of sampled answers.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from llm.align import handoff
from llm.align import losses as L
from llm.align.common import StageLog, batch_indices, checker_eval, checkpoint_tokenizer, stage_log_path
from llm.align.config import AlignConfig
from llm.align.data import encode_prompt, pair_batch
from llm.align.engine import Dist, Trainer, frozen
from llm.align.rollout import make_batch, sample
from llm.align.task import read_jsonl


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(batch,) Σ over response tokens of log p(target); logits (batch, width, vocab), targets (batch, width−1)."""
    return L.token_logprobs(logits[:, :-1], targets).sum(1)


def run_dpo(cfg: AlignConfig, dist: Dist | None = None, log=print) -> dict:
    """DPO from dpo.init (default <out_dir>/sft); writes <out_dir>/dpo. Returns held-out metrics."""
    from llm.align.ppo import sequence_kl

    dist = dist or Dist()
    t0 = time.perf_counter()
    s = cfg.dpo
    init = Path(s.init or cfg.stage_dir("sft"))
    tok = checkpoint_tokenizer(init)
    policy, _ = handoff.load_stage(init, "lm", tok.fingerprint())
    reference = frozen(handoff.load_stage(init, "lm", tok.fingerprint())[0])
    train = read_jsonl(cfg.data_path("pairs_train"))
    torch.manual_seed(cfg.seed)
    trainer = Trainer(policy, s.optim, s.steps, dist)
    logger = StageLog(stage_log_path(cfg, "dpo"), dist.is_main, log)
    for step in range(s.steps):
        idx = batch_indices(len(train), step, s.batch_size, cfg.seed + 9)[dist.shard(s.batch_size)]
        b = pair_batch(tok, cfg.task, [train[i] for i in idx])
        tokens, targets = b.tokens.to(dist.device), b.targets.to(dist.device)
        trainer.train()
        lp = sequence_logprobs(trainer(tokens), targets)
        with torch.no_grad():
            ref = sequence_logprobs(reference(tokens), targets)
        n = b.n_pairs
        loss, margin = L.dpo_loss(lp[:n], lp[n:], ref[:n], ref[n:], s.beta)
        lr = trainer.current_lr()
        grad_norm = trainer.step(loss)
        logger.row({"step": step + 1, "loss": dist.sum(float(loss.detach())) / dist.world,
                    "reward_margin": dist.sum(float(margin.mean())) / dist.world,
                    "reward_accuracy": dist.sum(float((margin > 0).float().sum())) / s.batch_size,
                    "lr": lr, "grad_norm": grad_norm})
    logger.close()
    metrics: dict = {}
    if dist.is_main:
        model = trainer.module
        metrics.update(checker_eval(cfg, model, tok))
        prompts = [encode_prompt(tok, cfg.task, r["prompt"]) for r in read_jsonl(cfg.data_path("prompts_eval"))]
        gen = torch.Generator().manual_seed(cfg.seed + 777)
        eb = make_batch(prompts, sample(model, prompts, cfg.eval.max_new_tokens, cfg.eval.temperature, tok.eos_id,
                                        gen), tok.eos_id)
        metrics["kl"] = sequence_kl(model, reference, eb)
        metrics["wall_s"] = time.perf_counter() - t0
        handoff.save_stage(cfg.stage_dir("dpo"), "dpo", model, init / "tokenizer.model", cfg.to_yaml(), metrics,
                           {"init": str(init)})
    dist.barrier()
    return metrics
