"""What every alignment stage shares: the sample order, the metrics log, the tokenizer of a checkpoint, and the
held-out checker evaluation."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from data_pipeline.tokenizer import Tokenizer
from llm.align.config import AlignConfig
from llm.align.rollout import evaluate_checker
from llm.align.seeds import Stream, seed_for


def batch_indices(n: int, step: int, batch: int, seed: int, stream: Stream) -> list[int]:
    """Indices of the global batch of `step`: consecutive slices of per-epoch permutations of range(n), each seeded
    by (seed, stream, epoch). A pure function of its arguments, so every rank and every layout draws the same
    samples."""
    out: list[int] = []
    pos = step * batch
    while len(out) < batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, stream, epoch))).tolist()
        take = perm[offset:offset + batch - len(out)]
        out += take
        pos += len(take)
    return out


def checkpoint_tokenizer(path: str | Path):
    """The tokenizer of stage directory `path`: a SentencePiece `Tokenizer` or an `HFTokenizer`, as its stage.json
    records (llm/align/handoff.py)."""
    from data_pipeline.hf_tokenizer import load_tokenizer
    from llm.align.handoff import HandoffError, tokenizer_path
    file = tokenizer_path(path)
    try:
        return load_tokenizer(file)
    # Only the tokenizer's own file is read here: a missing one (FileNotFoundError) or one that does not parse
    # (ValueError, data_pipeline/tokenizer.py) is a damaged checkpoint, not a bug.
    except (OSError, ValueError) as e:
        raise HandoffError(f"{path}: its tokenizer {file.name} cannot be read ({' '.join(str(e).split())[:200]}); "
                           "the checkpoint is damaged: copy it again or run the stage that writes it") from None


class StageLog:
    """<stage dir>.metrics.jsonl rows plus a console line every `every` steps (main rank only). `rows` holds
    every row written, for the in-stage checkpoint (llm/align/resume.py)."""

    def __init__(self, path: Path, enabled: bool = True, log=print, every: int = 10):
        self.enabled, self.log, self.every = enabled, log, every
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("w")

    def restore(self, rows: list[dict]) -> None:
        """Start the log again from the rows a checkpoint recorded (a resumed stage's earlier steps)."""
        self.rows = []
        if self.enabled:
            self.file.seek(0)
            self.file.truncate()
        for r in rows:
            self.row(r, quiet=True)

    def row(self, row: dict, force: bool = False, quiet: bool = False) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if not quiet and (force or row.get("step", 0) % self.every == 0):
            cells = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            self.log(f"{cells} | {time.perf_counter() - self.t0:.0f}s")

    def close(self) -> None:
        if self.enabled:
            self.file.close()


def checker_eval(cfg: AlignConfig, model, tok: Tokenizer, template, reward_model=None, reward_stats=(0.0, 1.0)
                 ) -> dict:
    """Eval reward, checker accuracy (and RM gap) of `model` on the held-out prompts (eval.prompts, scored by
    eval.reward), as every stage reports it; {} when there are none (task.name: none, eval.prompts null)."""
    from llm.align.formats import load
    from llm.align.rewards import RewardFunctions
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
    checker evaluation, the RM's policy samples): minutes on a CPU, silent before. Written to the console and
    <out_dir>/logs/progress.log by the main rank (RANK 0 under a launcher when `is_main` is not given)."""
    import os

    from llm.train.progress import Progress
    main = os.environ.get("RANK", "0") == "0" if is_main is None else is_main
    return Progress(name, total, unit, log_file=Path(cfg.out_dir) / "logs" / "progress.log", enabled=main)


def stage_log_path(cfg: AlignConfig, stage: str) -> Path:
    # Next to the stage directory, not inside it: the directory is replaced atomically when the stage ends.
    return Path(cfg.out_dir) / "logs" / f"{stage}.metrics.jsonl"


def stage_resume_dir(cfg: AlignConfig, stage: str) -> Path:
    """Where the stage's in-stage checkpoints go (llm/align/resume.py); next to the stage directory, as the log."""
    return Path(cfg.out_dir) / "resume" / stage
