"""What a stage of the chain is, the registry of them, and what every stage does around its own loop (TRL's shared
base trainer).

A `Stage` declares its name (also its config section and its directory <out_dir>/<name>), the checkpoints and
task data files it reads and the format it reads each in (what the chain's pre-flight, llm/align/chain.py,
checks before any stage trains), the data it writes, the metrics the chain's summary quotes, and its run function.
`REGISTRY` holds them by name, in the order of llm/align/config.py's STAGES: what launch/ and the chain dispatch on.
A `StageContext` is opened by each run function: it finds the checkpoint the stage starts from, opens its
tokenizer, loads models, builds trainers through the runtime, logs metrics rows (`StageLog`), resumes from and
writes the in-stage checkpoints (llm/align/resume.py), and saves the stage checkpoint at the end. What is left in
base_stage.py, sft.py, reward_training.py, ppo.py, dpo.py and grpo_rloo.py is the method.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from llm.align import handoff
from llm.align.config import DATA_KINDS, AlignConfig
from llm.align.resume import StageResume, stage_resume_dir
from llm.align.seeds import Stream, seed_for
from llm.train.runtime import Runtime, SingleProcess, Trainer
from llm.align.template import ChatTemplate
from llm.config import OptimConfig
from typed_yaml import log

RunFn = Callable[[AlignConfig, Runtime | None], dict]


@dataclass(frozen=True)
class Stage:
    name: str
    run: RunFn
    """run(cfg, runtime) → the stage's metrics (also recorded in its stage.json); its console lines go through
    typed_yaml/log.py (the main rank's)."""
    checkpoints: dict[str, str] = field(default_factory=dict)
    """{field of the stage's config section: the stage whose directory it defaults to}; the first is the model
    the stage starts from, whose tokenizer it keeps (e.g. sft: {"init": "base"})."""
    data: tuple[str, ...] = ()
    """Data sources it reads, as keys of llm/align/config.py DATA_SOURCES (e.g. 'sft.data')."""
    writes_data: tuple[str, ...] = ()
    summary_keys: tuple[str, ...] = ()
    """Metrics quoted as `<name>.<key>` in the chain report's summary."""
    requires: str | None = None
    """The data key without which the stage has nothing to train on: with it unset (task.name: none) the chain
    skips the stage, saying so."""
    reads: Callable[[AlignConfig, str], bool] | None = None
    """Whether the stage reads checkpoint or data `key` under a config (e.g. grpo_rloo reads the RM only when
    grpo_rloo.reward lists 'rm'); None: all of `checkpoints` and `data`."""
    reads_as: dict[str, str] = field(default_factory=dict)
    """{data key: kind} where the stage reads a key as another kind than the key holds (config.py DATA_KINDS)."""

    def checkpoint_path(self, cfg: AlignConfig, key: str) -> Path:
        """The checkpoint the stage reads as `key`: <section>.<key> when set, else the default stage's directory."""
        return Path(getattr(getattr(cfg, self.name), key) or cfg.stage_dir(self.checkpoints[key]))

    def reads_key(self, cfg: AlignConfig, key: str) -> bool:
        """Whether the stage reads checkpoint or data `key` under cfg (a data key: also configured)."""
        if key in self.data and cfg.source(key) is None:
            return False
        return self.reads is None or self.reads(cfg, key)

    def data_kind(self, key: str) -> str:
        """The kind (llm/align/formats.py PARSERS) the stage reads data key `key` as."""
        return self.reads_as.get(key, DATA_KINDS[key])

    def data_read(self, cfg: AlignConfig) -> dict[str, str]:
        """{data key: its path} of the data the stage reads under cfg."""
        return {k: cfg.source(k) for k in self.data if self.reads_key(cfg, k)}

    def missing_inputs(self, cfg: AlignConfig) -> list[Path]:
        """The checkpoints (complete stage directories) and data files it reads that are not there now."""
        return list(self.missing_inputs_by_key(cfg).values())

    def missing_inputs_by_key(self, cfg: AlignConfig) -> dict[str, Path]:
        """missing_inputs by the key that names each ('ppo.reward_model', 'sft.data')."""
        checkpoints = {f"{self.name}.{k}": self.checkpoint_path(cfg, k) for k in self.checkpoints
                       if self.reads_key(cfg, k)}
        data = {k: Path(p) for k, p in self.data_read(cfg).items()}
        return ({k: p for k, p in checkpoints.items() if not handoff.is_complete(p)}
                | {k: p for k, p in data.items() if not p.exists()})

    def unconfigured(self, cfg: AlignConfig) -> str | None:
        """Why the stage cannot run under cfg (its required data is not configured), or None."""
        if self.requires is not None and cfg.source(self.requires) is None:
            return f"no {self.requires} configured (task.name: none)"
        return None

    def outputs(self, cfg: AlignConfig) -> list[Path]:
        return [Path(cfg.stage_dir(self.name))] + [Path(cfg.data_path(d)) for d in self.writes_data]


def stage_log_path(cfg: AlignConfig, stage: str) -> Path:
    # Next to the stage directory, not inside it: the directory is replaced atomically when the stage ends.
    return Path(cfg.out_dir) / "logs" / f"{stage}.metrics.jsonl"


class StageLog:
    """<stage dir>.metrics.jsonl rows (written when `enabled`: the main rank) plus a console line every `every` steps
    (typed_yaml/log.py `info`). `rows` holds every row written, for the in-stage checkpoint (llm/align/resume.py)."""

    def __init__(self, path: Path, enabled: bool = True, every: int = 10):
        self.enabled, self.every = enabled, every
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
            log.info(f"{cells} | {time.perf_counter() - self.t0:.0f}s")

    def close(self) -> None:
        if self.enabled:
            self.file.close()


class StageContext:
    """One run of `stage`: opened before its loop, `save` at its end (every rank calls both).

    Raises handoff.HandoffError when the checkpoint it starts from is not a complete stage directory.
    """

    def __init__(self, cfg: AlignConfig, stage: Stage, runtime: Runtime | None = None, log_every: int = 10):
        self.cfg, self.stage = cfg, stage
        self.runtime = runtime or SingleProcess()
        self.t0 = time.perf_counter()
        self.init = stage.checkpoint_path(cfg, next(iter(stage.checkpoints)))
        info = handoff.read_info(self.init)  # a missing or partial checkpoint is named before its tokenizer is opened
        self.template = ChatTemplate.from_config(cfg)
        handoff.check_template(info, self.init, self.template.to_dict())
        self.tokenizer = handoff.checkpoint_tokenizer(self.init)
        self.skipped_rows: dict[str, int] = {}
        self.log = StageLog(stage_log_path(cfg, stage.name), self.runtime.is_main, log_every)
        self.resumer: StageResume | None = None
        self.trainers: dict[str, Trainer] = {}
        self.modules: dict[str, torch.nn.Module] = {}

    def data(self, key: str, kind: str, seq_len: int) -> list | None:
        """The rows of the data source `key` (e.g. 'sft.data', llm/align/config.py DATA_SOURCES) parsed as `kind`
        by llm/align/formats.py under cfg.bad_rows; skipped rows are logged and counted in the metrics. None when
        the key is not configured (task.name: none)."""
        from llm.align.formats import load
        if key not in self.stage.data or kind != self.stage.data_kind(key):
            # A bug, not a user mistake: the pre-flight (llm/align/chain.py) checked what the stage declares.
            raise ValueError(f"stage {self.stage.name} reads {key} as {kind!r} but declares "
                             f"{self.stage.data_kind(key) if key in self.stage.data else 'no such key'}")
        if self.cfg.source(key) is None:
            return None
        loaded = load(self.cfg.source(key), kind, self.template, self.tokenizer, seq_len, self.cfg.bad_rows)
        if loaded.skipped:
            self.skipped_rows[key] = len(loaded.skipped)
            log.info(f"{self.stage.name}: {loaded.summary()}")
        return loaded.rows

    def load(self, kind: str, key: str | None = None):
        """(model, StageInfo) of the checkpoint read as `key` (default: the one the stage starts from), loaded as
        `kind` ('lm' or 'reward') onto the runtime's device (a frozen reference or RM is never moved by an engine)
        and refused unless it was trained with this stage's tokenizer and template."""
        path = self.init if key is None else self.stage.checkpoint_path(self.cfg, key)
        model, info = handoff.load_stage(path, kind, tokenizer_fingerprint=self.tokenizer.fingerprint())
        handoff.check_template(info, path, self.template.to_dict())
        return model.to(self.runtime.device), info

    def trainer(self, module: torch.nn.Module, optim: OptimConfig, zero_stage: int, total_steps: int) -> Trainer:
        """The Trainer of `module` (a Transformer or a RewardModel) through the runtime; its blocks compiled first
        when cfg.compile (before the engine wraps the module, as llm/train does)."""
        if self.cfg.compile:
            from llm.train.compile import compile_blocks
            compile_blocks((module.body if hasattr(module, "body") else module).layers)
        # Seeded here, after loading (which draws from torch's generator) and before training (dropout draws).
        torch.manual_seed(seed_for(self.cfg.seed, Stream.TORCH))
        return Trainer(self.runtime.prepare(module, optim, zero_stage), optim, total_steps)

    def resume(self, total_steps: int, trainers: dict[str, Trainer], modules: dict[str, torch.nn.Module] | None = None
               ) -> tuple[int, dict]:
        """Restore the stage's latest in-stage checkpoint, if any, into `trainers` (name → Trainer, all the stage
        trains), `modules` (other state the loop carries) and the RNGs, and its rows into the log; later
        `checkpoint` calls save the same objects. Returns (steps already done, the loop state it saved), (0, {})
        when starting afresh. A checkpoint written under another config is discarded, with a line saying so."""
        every = getattr(self.cfg, self.stage.name).checkpoint_every
        self.resumer = StageResume(stage_resume_dir(self.cfg, self.stage.name), every, total_steps, self.runtime,
                                   self._config_sha())
        self.trainers, self.modules = trainers, modules or {}
        latest = self.resumer.latest()
        if latest is None:
            return 0, {}
        from llm.align.resume import read_trainer_state
        # Checked before anything is compared or restored: a damaged trainer_state.json is named, never guessed at.
        if read_trainer_state(latest, list(trainers)).get("config_sha") != self._config_sha():
            log.info(f"{self.stage.name}: {latest} was written under another config; starting at step 0")
            self.runtime.barrier()
            self.resumer.clear()
            self.runtime.barrier()
            return 0, {}
        state = self.resumer.load(trainers, self.modules)
        self.log.restore(state["rows"])
        log.info(f"{self.stage.name}: resumed from {latest} (step {state['step']})")
        return state["step"], state["loop"]

    def checkpoint(self, step: int, loop: dict | None = None) -> None:
        """After step `step` (1-based): an in-stage checkpoint when <stage>.checkpoint_every says so. `loop`: the
        JSON state the loop carries past this step (returned by `resume`). Every rank calls it."""
        self.resumer.maybe_save(step, self.trainers, self.modules, loop or {}, self.log.rows)

    def _config_sha(self) -> str:
        return hashlib.sha256(self.cfg.to_yaml().encode()).hexdigest()

    def save(self, model: torch.nn.Module, metrics: dict, extra: dict | None = None) -> dict:
        """Close the log; on the main rank add wall_s and write <out_dir>/<name> (the starting checkpoint's
        tokenizer, the resolved config, `metrics`, `extra`); then wait for every rank. Returns metrics."""
        self.log.close()
        if self.skipped_rows:
            metrics["skipped_rows"] = dict(self.skipped_rows)
        if self.runtime.is_main:
            metrics["wall_s"] = time.perf_counter() - self.t0
            handoff.save_stage(self.cfg.stage_dir(self.stage.name), self.stage.name, model,
                               handoff.tokenizer_path(self.init), self.cfg.to_yaml(), metrics, extra,
                               self.template.to_dict())
        self.runtime.barrier()
        if self.resumer is not None:
            self.resumer.clear()  # the stage directory is complete: a re-run skips the stage
        return metrics


_MODULES = ("base_stage", "sft", "reward_training", "ppo", "dpo", "grpo_rloo")
"""The module of each stage, in the order of STAGES."""


def __getattr__(name: str):
    # REGISTRY is built on first use: the stage modules import Stage and StageContext from here.
    if name == "REGISTRY":
        import importlib
        stages = [importlib.import_module(f"llm.align.{m}").STAGE for m in _MODULES]
        globals()["REGISTRY"] = registry = {s.name: s for s in stages}
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
