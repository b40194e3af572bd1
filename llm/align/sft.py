"""Supervised fine-tuning on prompt/response pairs, the loss on response tokens only.

DeepSpeed-Chat's SFT trains on the prompt tokens too; here the prompt's targets are IGNORE_INDEX
(llm/align/template.py), so the model is fitted to the demonstrations' answers, not to the prompts. The
loss is the mean over the global batch's response tokens (each rank divides its sum by the global count /
world, so data-parallel training computes debug mode's update).
"""
from __future__ import annotations

import torch

from llm.align.template import sft_batch
from llm.align.config import AlignConfig
from llm.align.rollout import checker_eval
from llm.align.losses import IGNORE_INDEX, sft_loss
from llm.align.seeds import Stream, batch_indices
from llm.align.stages import Stage, StageContext
from llm.train.runtime import Runtime


@torch.no_grad()
def eval_loss(model, examples, seq_len: int, batch_size: int = 64) -> float:
    """Response-token mean cross-entropy over `examples`."""
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(examples), batch_size):
        inputs, targets = sft_batch(examples[s:s + batch_size], seq_len)
        n = int((targets != IGNORE_INDEX).sum())
        total += float(sft_loss(model(inputs), targets)) * n
        count += n
    return total / count


def run_sft(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """Fine-tune the checkpoint at sft.init (default <out_dir>/base) and write <out_dir>/sft. Returns metrics."""
    ctx = StageContext(cfg, STAGE, runtime)
    d, s, tok = ctx.runtime, cfg.sft, ctx.tokenizer
    model, info = ctx.load("lm")
    seq_len = info.model_config.seq_len
    train = ctx.data("sft.data", "conversation", seq_len)
    valid = ctx.data("sft.eval_data", "conversation", seq_len)
    trainer = ctx.trainer(model, s.optim, s.zero_stage, s.steps)
    start, loop = ctx.resume(s.steps, {"model": trainer})
    loss = loop.get("loss")
    for step in range(start, s.steps):
        idx = batch_indices(len(train), step, s.batch_size, cfg.seed, Stream.SFT_ORDER)[d.shard(s.batch_size)]
        inputs, targets = sft_batch([train[i] for i in idx], seq_len, s.packing)
        n_global = d.sum(float((targets != IGNORE_INDEX).sum()))
        trainer.train()
        loss_t = sft_loss(trainer(inputs.to(d.device)), targets.to(d.device), n_global / d.world)
        lr = trainer.current_lr()
        # An MoE policy keeps its load-balancing loss while fine-tuned, as Mixtral's HF training adds
        # router_aux_loss_coef·aux_loss; 0 for a dense model. The logged loss stays the cross-entropy.
        grad_norm = trainer.step(loss_t + trainer.module.moe_loss())
        loss = d.sum(float(loss_t.detach())) / d.world
        row = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm}
        if valid is not None and ((s.eval_every and (step + 1) % s.eval_every == 0) or step + 1 == s.steps):
            row["eval_loss"] = eval_loss(trainer.module, valid, seq_len)
        ctx.log.row(row)
        ctx.checkpoint(step + 1, {"loss": loss})
    metrics = {"train_loss": loss, "eval_loss": eval_loss(trainer.module, valid, seq_len) if valid else None}
    if d.is_main:
        metrics.update(checker_eval(cfg, trainer.module, tok, ctx.template))
    return ctx.save(trainer.module, metrics, {"init": str(ctx.init)})


STAGE = Stage("sft", run_sft, checkpoints={"init": "base"}, data=("sft.data", "sft.eval_data", "eval.prompts"),
              requires="sft.data",
              summary_keys=("checker_accuracy", "eval_loss"))
