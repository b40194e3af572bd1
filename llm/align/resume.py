"""In-stage checkpoints: a stage killed mid-way resumes from its last one instead of step 0 (issue 10).

Every `<stage>.checkpoint_every` steps a stage writes <out_dir>/resume/<stage>/step_XXXXXXXX/ — next to the
stage directory, like the logs, not inside it (the stage directory is replaced atomically when the stage ends,
and this one is removed then). It holds
- each trained model's weights and optimizer state, written by its engine (`ModelEngine.save_state`: one file
  in debug mode, the weights plus each rank's optimizer shard under DeepSpeed);
- `<name>.pt` for each extra module the loop carries (PPO's EMA actor);
- `trainer_state.json`, written last: the step, each trainer's step count (the LR schedule's position), the RNG
  states as JSON, what the loop carries (PPO's adaptive β, its mini-batch generator) and the metrics rows
  logged so far, so the resumed run's log and final metrics are those of an uninterrupted one.
The directory is written under a temporary name and renamed into place when complete (llm/train/checkpoint.py
`publish`), so a run killed mid-save leaves the previous checkpoint as the latest. Every file is read with
llm/train/safe_load.py (audited, weights-only) or as JSON: a checkpoint is data, never code.

`maybe_save` is also each stage's per-step hook for what pretraining's loop does between steps (llm/train/loop.py):
- a progress line (llm/train/progress.py: step or iteration k/total, the row's numbers, ETA) to the console and
  <out_dir>/logs/progress.log, after the first step, the last, and every ~30 s (every iteration for PPO, GRPO and RLOO);
- preemption: after SIGTERM/SIGUSR1 (`PreemptionFlag`, installed when the stage's loop starts) every rank saves a
  checkpoint at the step just completed, due or not, and raises `StagePreempted`; the entry point prints where
  and how to resume and exits 75, as launch/pretrain.py does.
"""
from __future__ import annotations

import base64
import binascii
import json
import shutil
from pathlib import Path

import torch

from llm.train import checkpoint as ckpt
from llm.train import safe_load
from llm.train.loop import PreemptionFlag
from llm.train.progress import Progress
from typed_yaml import log
from typed_yaml.disk import disk_full_reason
from typed_yaml.errors import Preempted

PER_ITERATION = ("ppo", "grpo_rloo")
"""Stages whose steps are slow RL iterations: a progress line after each one."""

PROGRESS_KEYS = ("loss", "eval_loss", "train_accuracy", "eval_accuracy", "reward_margin", "reward_accuracy", "reward",
                 "kl", "response_length")
"""The numbers of a metrics row a progress line shows, in this order, when the row has them."""


class StagePreempted(Preempted):
    """A stage stopped on SIGTERM/SIGUSR1 after saving its in-stage checkpoint `path` at `step` (None: the stage
    keeps nothing and starts again, e.g. the bundled base's seconds of pretraining). Exit 75 (typed_yaml/errors.py):
    re-running the command resumes it."""

    def __init__(self, stage: str, step: int, path: Path | None, signal_name: str):
        self.stage, self.step, self.path, self.signal_name = stage, step, path, signal_name
        where = (f"saved {path} at step {step}; run the same command again to resume from it" if path is not None
                 else f"stopped at step {step}; run the same command again to start it over")
        super().__init__(f"{signal_name} received: stage {stage} {where}")


def generator_state(gen: torch.Generator) -> str:
    """An explicit generator's state as base64 text (the global ones are in llm/train/checkpoint.py rng_state)."""
    return ckpt.rng_to_text(gen.get_state())


def set_generator_state(text: str, gen: torch.Generator) -> None:
    gen.set_state(ckpt.rng_from_text(text))


def read_trainer_state(path: Path, trainers: list[str]) -> dict:
    """The trainer_state.json of in-stage checkpoint `path`, checked: JSON with the step, a step count for each of
    `trainers` and RNG states of the shapes this process restores. Raises HandoffError naming the file (a damaged
    checkpoint is the user's to remove, not a bug: the stage then resumes from nothing, or an earlier one)."""
    from llm.align.handoff import HandoffError
    file = path / ckpt.STATE_FILE
    fix = f"remove {path} to start the stage over"
    try:
        state = ckpt.read_state(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HandoffError(f"{file} is not JSON ({e}); {fix}") from None
    problems = []
    if not isinstance(state, dict):
        raise HandoffError(f"{file} holds a {type(state).__name__}, not an object; {fix}")
    if not isinstance(state.get("step"), int):
        problems.append("no integer 'step'")
    steps = state.get("trainer_steps")
    if not isinstance(steps, dict) or any(not isinstance(steps.get(n), int) for n in trainers):
        problems.append(f"'trainer_steps' lacks a step count for {trainers}")
    rng = state.get("rng")
    try:
        python, numpy, torch_text = rng["python"], rng["numpy"], rng["torch"]
        ok = (len(python) == 3 and len(python[1]) == 625 and len(numpy) == 5 and len(numpy[1]) == 624
              and len(base64.b64decode(torch_text, validate=True)) == torch.get_rng_state().numel())
    except (TypeError, KeyError, binascii.Error, ValueError):
        ok = False
    if not ok:
        problems.append("'rng' is not the RNG states this checkpoint format writes (python, numpy, torch)")
    if problems:
        raise HandoffError(f"{file} is damaged: {'; '.join(problems)}; {fix}")
    return state


class StageResume:
    """The in-stage checkpoints of one stage run; every rank calls `load`, `maybe_save` and `clear` together.

    every: steps between checkpoints (0: none); total: the stage's step count (no checkpoint at the last step,
    where the stage checkpoint is written instead); config_sha: recorded, so a caller can refuse a checkpoint
    written under another config.
    """

    def __init__(self, root: Path, every: int, total: int, runtime, config_sha: str = ""):
        self.root, self.every, self.total, self.runtime = Path(root), every, total, runtime
        self.config_sha = config_sha
        self.preempt = PreemptionFlag.install()
        stage = self.root.name  # <out_dir>/resume/<stage>
        iterations = stage in PER_ITERATION
        self.progress = Progress(stage, total, "iteration" if iterations else "step", log=log.info,
                                 log_file=self.root.parent.parent / "logs" / "progress.log",
                                 every_s=0.0 if iterations else None, enabled=runtime.is_main)

    def latest(self) -> Path | None:
        return ckpt.latest_checkpoint(self.root)

    def load(self, trainers: dict, modules: dict[str, torch.nn.Module]) -> dict | None:
        """Restore the latest checkpoint into `trainers` (name → llm/train/runtime.py Trainer), `modules` and the
        global RNGs; returns its trainer_state.json ({step, loop, rows, ...}), or None when there is none."""
        path = self.latest()
        if path is None:
            return None
        state = read_trainer_state(path, list(trainers))
        for name, trainer in trainers.items():
            trainer.engine.load_state(path, name)
            trainer.steps = state["trainer_steps"][name]
        for name, module in modules.items():
            module.load_state_dict(safe_load.load(path / f"{name}.pt"))
        ckpt.set_rng_state(state["rng"])
        self.progress.done = self.progress.start = state["step"]
        return state

    def report(self, step: int, rows: list[dict]) -> None:
        """The progress line of step `step` (main rank), from the last metrics row."""
        row = rows[-1] if rows and rows[-1].get("step") == step else {}
        self.progress.update(step - self.progress.done, **{k: row[k] for k in PROGRESS_KEYS if k in row})

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < self.total

    def maybe_save(self, step: int, trainers: dict, modules: dict[str, torch.nn.Module], loop: dict,
                   rows: list[dict]) -> None:
        """After step `step` (1-based) completed: report progress; write the checkpoint when due or when a signal
        asked the job to stop, then keep only it. Raises StagePreempted after a save a signal asked for."""
        d = self.runtime
        self.report(step, rows)
        # Every rank must agree before the collective save, whichever rank caught the signal (a sum over ranks).
        stop = d.sum(float(self.preempt.raised is not None and step < self.total)) > 0
        if not (self.due(step) or stop):
            return
        final = ckpt.step_dir(self.root, step)
        tmp = ckpt.temp_dir_for(final)
        if d.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        d.barrier()
        failure = None
        try:  # each rank writes its own files; no collective in between
            for name, trainer in trainers.items():
                trainer.engine.save_state(tmp, name)
            if d.is_main:
                for name, module in modules.items():
                    with open(tmp / f"{name}.pt", "wb") as f:  # a file object: a full disk keeps its errno
                        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, f)
        except (OSError, RuntimeError) as e:
            if disk_full_reason(e, tmp) is None:
                raise  # a bug: its traceback
            failure = e
        # Collective, as pretraining's save (llm/train/loop.py): the ranks agree on a failed write before the
        # half-written folder is deleted; the first rank that failed says so in one line.
        failed = d.gather([d.rank] if failure is not None else [])
        if failed:
            raise ckpt.shard_write_failed(failure, tmp, step, self.root, failed[0], d.rank, d.is_main)
        if d.is_main:
            with ckpt.disk_full_guard(tmp, step, self.root):
                ckpt.write_state(tmp / ckpt.STATE_FILE, {
                    "step": step, "config_sha": self.config_sha,
                    "trainer_steps": {n: t.steps for n, t in trainers.items()},
                    "rng": ckpt.rng_state(), "loop": loop, "rows": rows})
                ckpt.publish(tmp, final)
            ckpt.prune(self.root, keep=1)
        d.barrier()
        if stop:
            raise StagePreempted(self.root.name, step, final, self.preempt.raised or "a signal")

    def clear(self) -> None:
        """Remove the stage's checkpoints (main rank), once its stage directory is complete."""
        if self.runtime.is_main:
            shutil.rmtree(self.root, ignore_errors=True)


def stage_resume_dir(cfg, stage: str) -> Path:
    """Where the in-stage checkpoints of `stage` under AlignConfig `cfg` go: next to the stage directory, as its log."""
    return Path(cfg.out_dir) / "resume" / stage
