"""Resume a run in another layout with its optimizer state, through DeepSpeed's universal checkpoint.

A DeepSpeed checkpoint stores each rank's flat ZeRO partition of the fp32 weights and Adam moments, so it
loads only into the layout that wrote it. DeepSpeed's converter (deepspeed/checkpoint/ds_to_universal.py)
cuts those partitions back into one full tensor per parameter and state (`zero/<name>/fp32.pt`,
`exp_avg.pt`, `exp_avg_sq.pt`, `step.pt`), merging tensor-parallel shards along the dimension named by the
partition patterns every checkpoint carries (`universal_checkpoint_info` below). An engine
built with `"checkpoint": {"load_universal": true}` then takes its own slice of every tensor, whatever
its TP degree and ZeRO partitioning (runtime/engine.py `load_checkpoint`, checkpoint/universal_checkpoint.py
`load_hp_checkpoint_state`).

    step_XXXXXXXX/deepspeed/             what the run saved (engine.save_checkpoint(..., tag="deepspeed"))
    step_XXXXXXXX/deepspeed_universal/   convert_to_universal: load_checkpoint(step_dir, tag=UNIVERSAL_TAG)

`can_reshard` holds what DeepSpeed 0.19.8 can load that way; `checkpoint.reshard` (llm/config/training.py) turns it on.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import torch

from llm.config import ModelConfig
from parallel.tensor import TP_PLAN

SOURCE_TAG = "deepspeed"
UNIVERSAL_TAG = "deepspeed_universal"


def can_reshard(saved: dict, new: dict) -> tuple[bool, str]:
    """Whether a checkpoint saved under layout `saved` can be resumed under `new` with its optimizer state.

    Layouts are those of trainer_state.json: {"backend", "tp", "pp", "dp", "zero_stage"}. Returns (True, "")
    or (False, a reason naming the setting to change). Based on DeepSpeed 0.19.8's converter and loaders.
    """
    for which, layout in (("the checkpoint", saved), ("this run", new)):
        if layout.get("backend") != "deepspeed":
            return False, (f"{which} is not under the DeepSpeed launcher (layout {layout}); only DeepSpeed "
                           f"checkpoints convert to, and DeepSpeed engines load, the universal format")
    if saved.get("zero_stage", 0) < 1:
        # ZeRO-0 saves the optimizer as one torch state dict in mp_rank_*_model_states.pt; the converter
        # reads per-parameter fp32 fragments from *_optim_states.pt, which only ZeRO (and BF16_Optimizer) write.
        return False, ("the checkpoint was saved with parallel.zero_stage=0, which writes no per-parameter "
                       "optimizer fragments for DeepSpeed's converter; save with parallel.zero_stage>=1 to reshard")
    if new.get("zero_stage", 0) < 1:
        # Universal loading restores weights and moments through the ZeRO/BF16 optimizers' hp-fragment
        # mappings; the fp32/fp16/DDP-bf16 optimizers of ZeRO-0 have none.
        return False, "DeepSpeed loads universal checkpoints only with ZeRO; set parallel.zero_stage>=1"
    if (saved["zero_stage"] == 3) != (new["zero_stage"] == 3):
        # ZeRO-3 names its model-state files zero_pp_rank_*_mp_rank_*_model_states.pt (ZeRO-1/2:
        # mp_rank_*) and its loader reads the step from a global optimizer state that ZeRO-1/2's lacks.
        return False, (f"DeepSpeed cannot load a ZeRO-{saved['zero_stage']} universal checkpoint into "
                       f"ZeRO-{new['zero_stage']}: reshard between ZeRO-1/2 layouts, or between ZeRO-3 layouts")
    if new["zero_stage"] == 3 and new.get("tp", 1) > 1:
        # Stage 3 cuts the universal tensor into this rank's TP shard only for AutoTP-annotated parameters.
        return False, "DeepSpeed's ZeRO-3 universal loader does not shard our tensor-parallel layers; use tp=1"
    if saved.get("pp", 1) > 1 or new.get("pp", 1) > 1:
        # A PipelineModule names parameters by layer index ("3.attn.wq.weight"), the plain model by module
        # path ("layers.2.attn.wq.weight"), and the universal checkpoint keeps the saving run's names.
        return False, ("resharding with optimizer state is not supported for pipeline layouts "
                       "(parallel.pipeline>1): a pipeline's parameter names differ from the plain model's")
    return True, ""


def universal_dir(step_dir: str | Path) -> Path:
    return Path(step_dir) / UNIVERSAL_TAG


def convert_to_universal(step_dir: str | Path) -> Path:
    """Convert step_dir/deepspeed into step_dir/deepspeed_universal (once: an existing one is kept).

    Runs DeepSpeed's converter in this process with one worker (no process pool forked from a rank of a
    distributed job). Call it on one rank only, between barriers. The result is written under a temporary
    name and renamed when complete, so a crash never leaves a half-converted directory that looks done.
    Raises FileNotFoundError if step_dir holds no DeepSpeed checkpoint.
    """
    from deepspeed.checkpoint import ds_to_universal

    step_dir = Path(step_dir)
    final = universal_dir(step_dir)
    if final.is_dir():
        return final
    source = step_dir / SOURCE_TAG
    if not source.is_dir():
        raise FileNotFoundError(f"no DeepSpeed checkpoint {source} to convert")
    # The converter also writes a `latest_universal` file next to its output folder: keep it inside tmp.
    tmp = step_dir / f".tmp-{UNIVERSAL_TAG}"
    shutil.rmtree(tmp, ignore_errors=True)
    out = tmp / UNIVERSAL_TAG
    ds_to_universal.main(argparse.Namespace(
        input_folder=str(source), output_folder=str(out), num_extract_workers=1, num_merge_workers=1,
        keep_temp_folder=False, strict=True, inject_missing_state=False))
    out.rename(final)
    shutil.rmtree(tmp)
    return final


def reshard_source(cfg, layout: dict) -> Path | None:
    """The checkpoint this run will resume through the universal format (checkpoint.reshard), or None.

    That is the latest checkpoint in checkpoint.dir when resharding is on and its saved layout differs from
    `layout` in a way `can_reshard` accepts. Decided before deepspeed.initialize, which must be told
    to load universal checkpoints; the training loop refuses the other cases with the reason.
    """
    from llm.train import checkpoint as ckpt

    c = cfg.checkpoint
    latest = ckpt.latest_checkpoint(c.dir) if c.reshard and c.resume else None
    if latest is None:
        return None
    saved = ckpt.read_state(latest).get("layout", {})
    return latest if saved != layout and can_reshard(saved, layout)[0] else None


def convert_on_main(step_dir: str | Path, is_main: bool, any_rank) -> Path:
    """convert_to_universal on the main rank while the others wait; collective, call on every rank.

    any_rank: bool -> bool, true on every rank if it is true on any (an all-reduce, so also the barrier).
    A failed conversion raises on every rank instead of leaving the others waiting at a barrier.
    """
    error = None
    if is_main:
        try:
            convert_to_universal(step_dir)
        except Exception as e:  # re-raised below, after the other ranks have heard of it
            error = e
    if any_rank(error is not None):
        raise RuntimeError(f"converting {step_dir} to DeepSpeed's universal checkpoint failed"
                           + ("" if error is None else f": {error}")) from error
    return universal_dir(step_dir)


def load_resharded(engine, step_dir: str | Path, is_main: bool, any_rank) -> None:
    """Convert step_dir (on the main rank) and load it into `engine`, built with load_universal; collective.

    Two repairs after DeepSpeed 0.19.8's ZeRO-3 universal loader (stage3.py
    `load_hp_checkpoint_state_from_checkpoint_dir_stage3`), harmless under ZeRO-1/2:
    - it gives every parameter group the first group's hyperparameters, which would put weight decay on the
      no-decay group (llm/train/optim.py `param_groups`): the run's own are put back (the loop sets the LR);
    - it gives every group the same `step` tensor, which torch's Adam increments in place once per group,
      so the bias correction runs ahead: each group gets its own copy.
    """
    convert_on_main(step_dir, is_main, any_rank)
    own = [{k: v for k, v in g.items() if k != "params"} for g in engine.optimizer.param_groups]
    load_path, _ = engine.load_checkpoint(str(step_dir), tag=UNIVERSAL_TAG)
    if load_path is None:
        raise FileNotFoundError(f"no universal checkpoint under {universal_dir(step_dir)}")
    for group, settings in zip(engine.optimizer.param_groups, own):
        group.update(settings)
    for state in engine.optimizer.optimizer.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


def universal_checkpoint_info(cfg: ModelConfig) -> dict:
    """TP partition metadata for DeepSpeed's universal checkpoint (deepspeed/checkpoint/ds_to_universal.py).

    Attach it as `setattr(module, deepspeed.checkpoint.constants.UNIVERSAL_CHECKPOINT_INFO, ...)` on the module
    given to deepspeed.initialize. The converter concatenates unmatched parameters along dim 0 (column- and
    vocab-parallel here), row-parallel ones along dim 1, takes replicated ones from TP rank 0 and cuts vocabulary
    parameters to the original vocab size (ours is never padded). Patterns are re.match'ed against names that end
    in llm/model.py's names (any prefix, e.g. a pipeline layer index).
    """
    from deepspeed.checkpoint import constants as C

    def patterns(modules):
        return [rf"(.*\.)?{re.escape(m)}\.weight$" for m in modules]

    vocab = ["tok_embeddings"] + ([] if cfg.tie_embeddings else ["lm_head"])
    return {
        C.UNIVERSAL_CHECKPOINT_VERSION_KEY: C.UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        C.TP_REPLICATED_PARAMETER_PATTERNS: [r"(.*\.)?(attn_norm|mlp_norm|norm)\.weight$"],
        # The converter refuses a pattern no parameter matches: a model whose every block is MoE has no dense mlp.
        C.PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: patterns(m for m, s in TP_PLAN.items() if s == "row" and not (
            m.startswith("mlp.") and cfg.moe is not None and cfg.moe_layers == cfg.n_layers)),
        C.VOCABULARY_PARAMETER_PATTERNS: patterns(vocab),
        C.ORIGINAL_VOCAB_SIZE: cfg.vocab_size,
        C.PADDED_VOCAB_SIZE: cfg.vocab_size,
    }
