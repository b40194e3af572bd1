"""Reward model: the SFT transformer with a scalar head on the last (EOS) token, trained on checker-labelled
pairs with the Bradley–Terry loss −log σ(r_chosen − r_rejected − margin) (InstructGPT §3.5).

The checkpoint records the mean and std of the RM's scores on held-out responses, so PPO can normalise
rewards (InstructGPT normalises its RM so that demonstrations score 0 on average), and the held-out
pairwise accuracy. `rm.shuffle_labels` is the control: chosen and rejected swapped at random, an RM that
can learn nothing, from which PPO must gain nothing.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from llm.align import handoff
from llm.align.common import StageLog, batch_indices, checkpoint_tokenizer, stage_log_path
from llm.align.config import AlignConfig
from llm.align.data import pair_batch
from llm.align.engine import Dist, Trainer
from llm.align.losses import bradley_terry_loss
from llm.align.reward_model import RewardModel
from llm.align.task import read_jsonl


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, tok, task, rows: list[dict], batch_size: int = 128) -> dict:
    """Held-out pairwise accuracy (ties count half), the mean margin, and the score mean/std over all responses."""
    rm.eval()
    correct, margins, scores = 0.0, [], []
    for s in range(0, len(rows), batch_size):
        b = pair_batch(tok, task, rows[s:s + batch_size])
        r = rm.score(b.tokens, b.last_index)
        rc, rr = r[:b.n_pairs], r[b.n_pairs:]
        correct += float((rc > rr).sum() + 0.5 * (rc == rr).sum())
        margins += (rc - rr).tolist()
        scores += r.tolist()
    t = torch.tensor(scores)
    return {"pairwise_accuracy": correct / len(rows), "margin": sum(margins) / len(margins),
            "reward_mean": float(t.mean()), "reward_std": float(t.std().clamp(min=1e-6))}


def run_rm(cfg: AlignConfig, dist: Dist | None = None, log=print) -> dict:
    """Train the reward model from rm.init (default <out_dir>/sft); writes <out_dir>/rm. Returns metrics."""
    dist = dist or Dist()
    t0 = time.perf_counter()
    s = cfg.rm
    init = s.init or cfg.stage_dir("sft")
    tok = checkpoint_tokenizer(init)
    rm, info = handoff.load_stage(init, "reward", tokenizer_fingerprint=tok.fingerprint())
    train = read_jsonl(cfg.data_path("pairs_train"))
    valid = read_jsonl(cfg.data_path("pairs_eval"))
    if s.shuffle_labels:
        rng = random.Random(cfg.seed + 1)
        train = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) if rng.random() < 0.5 else r for r in train]
    torch.manual_seed(cfg.seed)
    trainer = Trainer(rm, s.optim, s.steps, dist)
    logger = StageLog(stage_log_path(cfg, "rm"), dist.is_main, log)
    for step in range(s.steps):
        idx = batch_indices(len(train), step, s.batch_size, cfg.seed)[dist.shard(s.batch_size)]
        b = pair_batch(tok, cfg.task, [train[i] for i in idx])
        trainer.train()
        values = trainer(b.tokens.to(dist.device))
        r = values.gather(1, b.last_index.to(dist.device)[:, None]).squeeze(1)
        rc, rr = r[:b.n_pairs], r[b.n_pairs:]
        loss = bradley_terry_loss(rc, rr, s.margin)
        grad_norm = trainer.step(loss)
        acc = dist.sum(float((rc > rr).float().sum())) / s.batch_size
        logger.row({"step": step + 1, "loss": dist.sum(float(loss.detach())) / dist.world, "train_accuracy": acc,
                    "lr": trainer.current_lr(), "grad_norm": grad_norm})
    logger.close()
    metrics = evaluate_pairs(trainer.module, tok, cfg.task, valid)
    metrics["wall_s"] = time.perf_counter() - t0
    if dist.is_main:
        logger.log(f"rm: held-out pairwise accuracy {metrics['pairwise_accuracy']:.3f}")
        handoff.save_stage(cfg.stage_dir("rm"), "rm", trainer.module, Path(init) / "tokenizer.model", cfg.to_yaml(),
                           metrics, {"init": str(init), "reward_mean": metrics["reward_mean"],
                                     "reward_std": metrics["reward_std"], "shuffle_labels": s.shuffle_labels})
    dist.barrier()
    return metrics
