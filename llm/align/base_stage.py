"""Stage 0 of the default chain: the task data, the tokenizer, and a tiny pretrained base model.

The base is pretrained with the ordinary pretraining loop (llm/train/debug.py `run_debug`) on format-only
text: each prompt followed by a random permutation of its digits. It learns the template and the
alphabet, not the task (checker accuracy ≈ mean 1/len! ≈ 7%), so SFT has something to teach.

A recipe that sets `base.path` starts from an existing model instead: a stage checkpoint is used as it is (the
stage is then complete, and skipped); a step directory written by launch/pretrain.py or a Hugging Face model
directory is imported into <out_dir>/base (`load_pretrained`) with its own tokenizer (SentencePiece or
tokenizer.json), and evaluated like the pretrained base.

A step directory holds the consolidated weights (`model.pt`, whatever the layout it was trained in), the run's
`config.yaml` (its `model` section is the shape) and its own copy of the tokenizer (tokenizer.model or tokenizer.json;
older step directories only name it in `data.tokenizer`, a path as the run was given it). A Hugging Face directory is
a LlamaForCausalLM `save_pretrained` directory (config.json, safetensors) with its tokenizer saved beside it
(tokenizer.json, tokenizer_config.json). Both are read by llm/train/checkpoint_reader.py `open_checkpoint`, as export,
evaluation and the audit read them; either tokenizer kind is opened by data_pipeline/hf_tokenizer.py
`load_tokenizer`, and the stage checkpoints carry it on (llm/align/handoff.py), so
every later stage reads an imported base like one made inside the chain.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from llm.align import handoff
from llm.align.config import DATA_SOURCES, AlignConfig
from llm.align.rollout import checker_eval
from llm.align.seeds import Stream, seed_for
from llm.align.stages import Stage
from llm.train.runtime import Runtime
from llm.align.task import DATA_FILES, generate_task_data, read_jsonl, train_task_tokenizer
from llm.align.template import ChatTemplate
from llm.config import ConfigError, ModelConfig
from llm.train import safe_load
from llm.train.loop import PreemptionFlag
from typed_yaml import log


def prepare_data(cfg: AlignConfig) -> dict[str, str]:
    """Write the task data under <out_dir>/data (once; kept when present so stages stay comparable)."""
    if Path(cfg.data_path("prompts_eval")).is_file():
        return {}
    return generate_task_data(cfg.task, Path(cfg.out_dir) / "data", seed_for(cfg.seed, Stream.TASK_DATA))


def needs_task_data(cfg: AlignConfig) -> bool:
    """Whether a data key of the config is left to the bundled task's files."""
    return cfg.task.name != "none" and any(cfg.source(k) == cfg.data_path(DATA_SOURCES[k]) for k in DATA_SOURCES)


def is_pretrain_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "model.pt").is_file() and (p / "config.yaml").is_file() and not handoff.is_complete(p)


def _from_step_dir(src: Path) -> tuple[dict, ModelConfig, Path]:
    from llm.train.checkpoint_reader import open_checkpoint
    try:
        found = open_checkpoint(src)
        tokenizer = found.tokenizer
    except ConfigError as e:
        raise handoff.HandoffError(f"base.path: {e}") from None
    return found.state_dict(), found.model, tokenizer  # unreadable weights: the checkpoint's ConfigError (exit 2)


def _from_hf_dir(src: Path) -> tuple[dict, ModelConfig, Path]:
    from llm.train.checkpoint_reader import open_checkpoint
    try:
        found = open_checkpoint(src)
        cfg, weights = found.model, found.state_dict()
    except ConfigError as e:
        raise handoff.HandoffError(f"base.path (a Hugging Face directory): {e}") from None
    if not (src / "tokenizer.json").is_file():
        raise handoff.HandoffError(f"base.path={src}: no tokenizer.json; save the tokenizer with the model "
                                   "(tokenizer.save_pretrained into the same directory)")
    return weights, cfg, src / "tokenizer.json"


def load_pretrained(src: str | Path):
    """(Transformer, tokenizer, tokenizer file, ModelConfig) of a launch/pretrain.py step directory or a Hugging Face
    model directory. Raises HandoffError when a piece is missing, the tokenizer has no EOS (every reply the chat
    template encodes ends with one) or the weights do not fit the recorded shape."""
    from data_pipeline.hf_tokenizer import load_tokenizer
    from llm.hf.load import is_hf_model_dir
    from llm.model import Transformer

    src = Path(src)
    if is_pretrain_dir(src):
        weights, cfg, tok_path = _from_step_dir(src)
    elif is_hf_model_dir(src) and not handoff.is_complete(src):
        weights, cfg, tok_path = _from_hf_dir(src)
    else:
        raise handoff.HandoffError(f"base.path={src} is neither a stage checkpoint (stage.json), a pretraining step "
                                   "directory (model.pt and config.yaml) nor a Hugging Face model directory "
                                   "(config.json and model.safetensors)")
    try:
        tok = load_tokenizer(tok_path)
    except (OSError, ValueError) as e:
        raise handoff.HandoffError(f"base.path={src}: its tokenizer {tok_path} cannot be read: {e}") from None
    if tok.vocab_size > cfg.vocab_size:
        raise handoff.HandoffError(f"base.path={src}: tokenizer {tok_path} has {tok.vocab_size} pieces but the model's "
                                   f"vocab_size is {cfg.vocab_size}")
    if tok.eos_id < 0:
        raise handoff.HandoffError(f"base.path={src}: tokenizer {tok_path} has no EOS token (tokenizer_config.json "
                                   "eos_token); the chat template ends every reply with it")
    model = Transformer(cfg)
    handoff.load_checked(model, weights, src)
    return model, tok, tok_path, cfg


def import_base(cfg: AlignConfig) -> dict:
    """Write <out_dir>/base from the launch/pretrain.py step directory or Hugging Face directory at base.path;
    returns its metrics."""
    t0 = time.perf_counter()
    if needs_task_data(cfg):
        prepare_data(cfg)
    model, tok, tok_path, model_cfg = load_pretrained(cfg.base.path)
    template = ChatTemplate.from_config(cfg)
    metrics = {"imported_from": str(cfg.base.path), "pretrain_model": dataclasses.asdict(model_cfg)}
    metrics.update(checker_eval(cfg, model, tok, template))
    metrics["wall_s"] = time.perf_counter() - t0
    log.info(f"base: imported {cfg.base.path} ({sum(p.numel() for p in model.parameters()):,} parameters, tokenizer "
             f"{tok_path})")
    handoff.save_stage(cfg.stage_dir("base"), "base", model, tok_path, cfg.to_yaml(), metrics,
                       template=template.to_dict())
    return metrics


def run_base(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """Train the tokenizer and pretrain the base model; writes <out_dir>/base. Returns metrics (on the main rank;
    the others return {} at once: a few seconds of single-process pretraining, not worth a process group)."""
    if runtime is not None and not runtime.is_main:
        return {}
    if cfg.base.path is not None:
        return import_base(cfg)
    from data_pipeline.indexed import IndexedDatasetBuilder, dtype_for_vocab
    from data_pipeline.tokenizer import Tokenizer
    from llm.config import RunConfig, DataConfig, OptimConfig, TrainConfig, CheckpointConfig
    from llm.model import Transformer
    from llm.train.debug import run_debug

    t0 = time.perf_counter()
    prepare_data(cfg)
    work = Path(cfg.out_dir) / "base_pretrain"
    tok_path = train_task_tokenizer(cfg.data_path("base"), work / "tokenizer",
                                    seed=seed_for(cfg.seed, Stream.TOKENIZER))
    tok = Tokenizer(tok_path)
    if tok.vocab_size > cfg.base.model.vocab_size:
        raise ConfigError(f"the task tokenizer has {tok.vocab_size} pieces but base.model.vocab_size="
                          f"{cfg.base.model.vocab_size}")
    prefix = work / "data"
    with IndexedDatasetBuilder(prefix, dtype=dtype_for_vocab(tok.vocab_size)) as builder:
        for row in read_jsonl(cfg.data_path("base")):
            builder.add_document(tok.encode(row["text"]) + [tok.eos_id])
    b = cfg.base
    run = RunConfig(model=b.model, data=DataConfig(paths=[str(prefix)], tokenizer=str(tok_path), valid_fraction=0.05),
                    optim=OptimConfig(lr=b.lr, warmup_steps=min(10, b.steps), weight_decay=0.0, fused=False),
                    train=TrainConfig(max_steps=b.steps, global_batch_size=b.batch_size, micro_batch_size=b.batch_size,
                                      seed=seed_for(cfg.seed, Stream.BASE_PRETRAIN), eval_every=0, eval_batches=2,
                                      log_every=50),
                    checkpoint=CheckpointConfig(every=0, keep=1, resume=False), out_dir=str(work))
    run.validate()
    # The bundled base is tiny (seconds of training) and is pretrained on the CPU under every launcher and device:
    # every rank of a data-parallel chain then starts from bitwise the same base, and the chain's measured
    # thresholds do not move with the GPU's kernels. The stages after it run on the runtime's device.
    outcome = run_debug(run, device=torch.device("cpu"))
    if outcome.status == "preempted":  # a signal: the chain stops here instead of saving a half-trained base
        from llm.align.resume import StagePreempted
        raise StagePreempted("base", outcome.step, None, PreemptionFlag.install().raised or "a signal")
    model = Transformer(b.model)
    model.load_state_dict(safe_load.load(outcome.checkpoint / "model.pt"))
    metrics = {"pretrain_loss": outcome.last_loss, "pretrain_eval_loss": outcome.eval_loss}
    template = ChatTemplate.from_config(cfg)
    metrics.update(checker_eval(cfg, model, tok, template))
    metrics["wall_s"] = time.perf_counter() - t0
    handoff.save_stage(cfg.stage_dir("base"), "base", model, tok_path, cfg.to_yaml(), metrics,
                       template=template.to_dict())
    return metrics


STAGE = Stage("base", run_base, writes_data=DATA_FILES, summary_keys=("checker_accuracy",))
