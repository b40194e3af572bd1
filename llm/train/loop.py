"""The pretraining loop, shared by the single-process and DeepSpeed backends.

A backend (the `Backend` contract of llm/train/backend.py) owns the model and optimizer. The loop owns
everything that must be identical across layouts: which samples make up each step (so any layout sees the
same global batch), the LR schedule, evaluation, metrics, checkpoint cadence, resume, preemption and
divergence checks.

Data position is the step number: step s consumes samples [s·G, (s+1)·G) of the shuffled training set
(G = global batch), data-parallel rank r takes its contiguous share of those. So a checkpoint needs no
iterator state, and resume is exact.
"""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llm.config import RunConfig
from llm.train import checkpoint as ckpt
from llm.train.backend import Backend, Throughput
from llm.train.metrics import MetricsLogger
from llm.train.progress import Progress
from llm.train.resume import check_same_run
from llm.train.routing import RoutingLog
from llm.train.schedule import lr_at
from typed_yaml import log
from typed_yaml.disk import disk_full_reason
from typed_yaml.errors import TrainingDiverged  # exit 3; raised here, defined with the other user errors


class SpikeWatch:
    """Warns when the loss jumps far above its recent level, or far above a uniform guess: a run whose LR is too
    high climbs (8.4 → 95 at lr=1.0 on the debug config) without ever becoming NaN, and would otherwise finish
    with exit 0 and no word."""

    WINDOW, MIN_HISTORY, FACTOR = 20, 5, 2.0

    def __init__(self, vocab_size: int):
        # ln V is the loss of predicting every token uniformly; a model twice as wrong as that is broken.
        self.uniform = math.log(vocab_size)
        self.recent: list[float] = []
        self.in_spike = False
        self.spikes: list[int] = []

    def check(self, step: int, loss: float) -> str | None:
        """A warning line when `loss` is over FACTOR × the median of the last WINDOW losses, or over FACTOR × ln V
        (once per spike: no new warning until the loss is back under both)."""
        history = sorted(self.recent)
        self.recent = (self.recent + [loss])[-self.WINDOW:]
        median = history[len(history) // 2] if len(history) >= self.MIN_HISTORY else None
        if median is not None and loss > self.FACTOR * median:
            why = f"{loss / median:.1f}x the median of the previous {len(history)} steps ({median:.4g})"
        elif loss > self.FACTOR * self.uniform:
            why = f"{loss / self.uniform:.1f}x the loss of a uniform guess (ln V = {self.uniform:.4g})"
        else:
            self.in_spike = False
            return None
        warn, self.in_spike = not self.in_spike, True
        if not warn:
            return None
        self.spikes.append(step)
        return f"warning: loss spike at step {step}: {loss:.4g} is {why}; if it does not come back down, lower optim.lr"


@dataclass
class TrainOutcome:
    step: int
    """Steps completed."""
    status: str
    """'finished' or 'preempted' (a checkpoint was saved; re-running the command resumes)."""
    last_loss: float | None
    eval_loss: float | None
    checkpoint: Path | None


class PreemptionFlag:
    """Set by SIGTERM/SIGUSR1 (what SLURM sends before a time limit or preemption); checked between steps.

    Signal handlers belong to the process, so there is one flag per process: `install()` returns it,
    registering the handlers on first use. Entry points call `install(startup=True)` first thing, so that an
    early SIGUSR1 (Python's default is to die) is remembered rather than fatal. SIGTERM keeps its default until
    the training loop installs the flag: a rank blocked in start-up (a rendezvous whose peer has died) runs no
    Python handler, and the deepspeed launcher, which SIGTERMs the other ranks when one fails, then waits 30 s
    before SIGKILL (a busy --master_port took 38 s to report). Before the loop there is nothing to save.
    """

    _instance: "PreemptionFlag | None" = None

    def __init__(self):
        self.raised = None
        self.signals: set[int] = set()

    def _register(self, signals) -> None:
        for s in signals:
            if s in self.signals:
                continue
            try:
                signal.signal(s, self._handler)
                self.signals.add(s)
            except ValueError:  # not the main thread (e.g. inside a test harness): no handler, no flag
                pass

    @classmethod
    def install(cls, startup: bool = False) -> "PreemptionFlag":
        if cls._instance is None:
            cls._instance = cls()
        cls._instance._register((signal.SIGUSR1,) if startup else (signal.SIGTERM, signal.SIGUSR1))
        return cls._instance

    def _handler(self, signum, frame):
        self.raised = signal.Signals(signum).name


def micro_batches(dataset, step: int, cfg: RunConfig, dp_rank: int, dp_size: int,
                  offset: int = 0) -> list[torch.Tensor]:
    """This rank's micro-batches of global step `step`: a contiguous share of the step's G samples."""
    g, m = cfg.train.global_batch_size, cfg.train.micro_batch_size
    per_rank = g // dp_size
    start = offset + step * g + dp_rank * per_rank
    n = len(dataset)
    samples = [dataset[(start + i) % n] for i in range(per_rank)]
    return [torch.stack(samples[i:i + m]) for i in range(0, per_rank, m)]


def evaluate(backend: Backend, valid, cfg: RunConfig) -> float:
    # eval_batches counts global batches, so the evaluated samples do not depend on the layout.
    batches = []
    for b in range(cfg.train.eval_batches):
        batches += micro_batches(valid, b, cfg, backend.dp_rank, backend.dp_size)
    return backend.eval_loss(batches)


def save_checkpoint(backend: Backend, cfg: RunConfig, step: int, tokens: int) -> Path:
    """Write the checkpoint of `step` (collective); TrainingDiverged, with nothing written, if any rank holds a
    non-finite weight or optimizer state (a resume would start from a broken model)."""
    where = backend.diagnose_nonfinite()
    if backend.any_rank(where is not None):
        raise TrainingDiverged(f"the state at step {step} holds non-finite values ({where or 'on another rank'}); "
                               "refusing to save it")
    final = ckpt.step_dir(cfg.checkpoint.dir, step)
    tmp = ckpt.temp_dir_for(final)
    with ckpt.disk_full_guard(tmp, step, cfg.checkpoint.dir):  # a full disk: one line, nothing published
        if backend.is_main:
            tmp.mkdir(parents=True, exist_ok=True)
        backend.barrier()
        failure = None
        try:
            backend.save(tmp)
            ckpt.save_rng_state(tmp, backend.rank)
        except (OSError, RuntimeError) as e:  # DeepSpeed's torch.save reports a full disk as RuntimeError
            if disk_full_reason(e, tmp) is None:
                raise  # a bug: its traceback
            failure = e
        # Collective: every rank learns that a write failed before anything is deleted or published.
        first = backend.first_rank_with(failure is not None)
        if first is not None:
            raise ckpt.shard_write_failed(failure, tmp, step, cfg.checkpoint.dir, first, backend.rank,
                                          backend.is_main)
        if backend.is_main:
            (tmp / "config.yaml").write_text(cfg.to_yaml())
            ckpt.save_tokenizer(tmp, cfg.data.tokenizer, cfg.checkpoint.dir)  # the step directory is self-contained
            ckpt.write_state(tmp / ckpt.STATE_FILE, {"step": step, "tokens": tokens,
                                                     "consumed_samples": step * cfg.train.global_batch_size,
                                                     "layout": backend.layout})
            ckpt.publish(tmp, final)
            ckpt.prune(cfg.checkpoint.dir, cfg.checkpoint.keep)
    backend.barrier()
    return final


def check_same_layout(path: Path, saved: dict, current: dict, can_reshard=None) -> None:
    """Refuse a resume in another layout, unless `can_reshard(saved, current)` (checkpoint.reshard) says yes."""
    if saved != current:
        from llm.config import ConfigError
        reshard = ""
        if can_reshard is not None:
            ok, reason = can_reshard(saved, current)
            if ok:
                return
            reshard = f" (checkpoint.reshard cannot carry the optimizer state over: {reason})"
        raise ConfigError(f"checkpoint {path} was saved with layout {saved}, this run has {current}{reshard}: resume "
                          f"with the same layout, or start a run in the new layout from its weights with "
                          f"checkpoint.init_from={path} (and a new checkpoint.dir)")


def train(cfg: RunConfig, backend: Backend, train_set, valid_set, throughput: Throughput,
          eval_only: bool = False, memory=None) -> TrainOutcome:
    """Run (or resume) pretraining to cfg.total_steps. Returns when finished or preempted.

    train_set, valid_set: datasets of (seq_len + 1)-token samples; throughput: what MFU/HFU are measured with.
    memory: a llm.train.memory_watch.MemoryWatch whose predicted and peak bytes every metrics row carries.
    eval_only: load the latest checkpoint (or checkpoint.init_from), evaluate once, write <out_dir>/eval.json.
    """
    total = cfg.total_steps
    step, tokens = 0, 0
    latest = ckpt.resume_point(cfg.checkpoint.dir) if cfg.checkpoint.resume else None
    if latest is not None:
        state = ckpt.read_state(latest)
        check_same_run(latest, cfg)
        reshard = backend.can_reshard if cfg.checkpoint.reshard else None
        check_same_layout(latest, state.get("layout", {}), backend.layout, reshard)
        backend.load(latest)
        ckpt.load_rng_state(latest, backend.rank)
        step, tokens = state["step"], state["tokens"]
        log.info(f"resumed from {latest} at step {step}")
    if eval_only and latest is None and not cfg.checkpoint.init_from:
        from llm.config import ConfigError
        raise ConfigError(f"--eval-only has no weights to evaluate: no checkpoint under checkpoint.dir="
                          f"{cfg.checkpoint.dir} and no checkpoint.init_from (it would score a random init)")
    if eval_only:
        eval_loss = evaluate(backend, valid_set, cfg)
        if backend.is_main:
            (Path(cfg.out_dir) / "eval.json").write_text(json.dumps({"step": step, "eval_loss": eval_loss}))
        log.info(f"eval loss {eval_loss:.6f} at step {step}")
        return TrainOutcome(step, "evaluated", None, eval_loss, latest)
    metrics = MetricsLogger(Path(cfg.out_dir) / "metrics.jsonl", enabled=backend.is_main, resume_step=step,
                            logging=cfg.logging, total_steps=total, run_config=asdict(cfg))
    preempt = PreemptionFlag.install()
    # Until the first metrics line (a multiple of log_every), which may be minutes away on a slow start: a line
    # after the first step (its time holds compilation and warm-up) and every ~30 s, also in <out_dir>/progress.log.
    every = cfg.train.log_every
    first_row = min(total, (step // every + 1) * every)
    early = Progress("pretrain", total, "step", done=step, log_file=Path(cfg.out_dir) / "progress.log",
                     enabled=backend.is_main)
    tokens_per_step = cfg.tokens_per_step
    last_loss = eval_loss = None
    saved = latest
    skipped_steps = 0
    spikes = SpikeWatch(cfg.model.vocab_size)
    mfu_warned = False
    routing = RoutingLog(backend.routing, cfg.model.moe.experts if cfg.model.moe else 0)
    try:
        while step < total:
            lr = lr_at(step, cfg.optim.lr, cfg.optim.warmup_steps, total, cfg.optim.min_lr_ratio)
            batches = micro_batches(train_set, step, cfg, backend.dp_rank, backend.dp_size)
            t0 = time.perf_counter()
            result = backend.train_step(batches, lr)
            dt = time.perf_counter() - t0
            norm_ok = result.grad_norm is None or math.isfinite(result.grad_norm)
            if not result.skipped and not (math.isfinite(result.loss) and norm_ok):
                where = result.nonfinite or backend.diagnose_nonfinite() or "none (only the loss is)"
                what = f"loss became {result.loss}" if norm_ok else f"gradient norm became {result.grad_norm}"
                raise TrainingDiverged(f"{what} at step {step + 1}; first non-finite: {where}; nothing was saved "
                                       f"for this step (latest checkpoint: {saved or 'none'})")
            step += 1
            tokens += tokens_per_step
            last_loss = result.loss
            tps = tokens_per_step / dt
            row = {"step": step, "loss": result.loss, "lr": lr, "tokens": tokens, "tokens_per_s": tps,
                   "mfu": throughput.mfu(tps), "step_time_s": dt, **(memory.row() if memory else {})}
            if result.grad_norm is not None and math.isfinite(result.grad_norm):
                row["grad_norm"] = result.grad_norm  # NaN (an fp16 overflow) is not valid JSON
            if row["mfu"] > 1.0 and not mfu_warned:
                # On CPU the peak is timed at start-up: a machine busy then gives a low peak and MFU above 100%.
                mfu_warned = True
                log.warning(f"MFU {row['mfu']:.0%} at step {step} is above 100%: the peak it is measured against "
                            f"({throughput.peak_flops / 1e12:.3g} TFLOP/s per device) is too low (on CPU, timed at "
                            "start-up while the machine was busy?); read this run's MFU as relative")
            if throughput.hardware_flops_per_token != throughput.flops_per_token:
                row["hfu"] = throughput.hfu(tps)
            warning = spikes.check(step, result.loss)
            if warning:
                row["loss_spike"] = True
                log.info(warning)
            if result.loss_scale is not None:
                skipped_steps += result.skipped
                row.update(loss_scale=result.loss_scale, skipped=result.skipped, skipped_steps=skipped_steps)
            if step < first_row:
                note = ""
                if early.done == early.start:
                    warm = "compilation and warm-up included" if cfg.train.compile else "warm-up included"
                    note = f"first step {dt:.1f} s ({warm}); metrics every {every} steps"
                early.update(1, note, loss=result.loss, tokens_per_s=round(tps))
            if step % cfg.train.log_every == 0 or step == total:
                row.update(routing.row(backend))
                metrics.log(row, console=f"step {step}/{total}")
            if (cfg.train.eval_every and step % cfg.train.eval_every == 0) or step == total:
                eval_loss = evaluate(backend, valid_set, cfg)
                metrics.log({"step": step, "eval_loss": eval_loss, "tokens": tokens}, console=f"eval {step}/{total}")
            if step == total or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                saved = save_checkpoint(backend, cfg, step, tokens)
            stop = bool(preempt.raised) and step < total
            # Every rank must agree before the collective save, whichever rank caught the signal.
            stop = backend.any_rank(stop)
            if stop:
                saved = save_checkpoint(backend, cfg, step, tokens)
                then = "re-run to resume" if cfg.checkpoint.resume else "checkpoint.resume is off: a re-run starts over"
                log.info(f"{preempt.raised or 'a signal'} received: saved {saved} at step {step}; {then}")
                return TrainOutcome(step, "preempted", last_loss, eval_loss, saved)
    finally:
        metrics.close()
        if spikes.spikes:
            log.warning(f"{len(spikes.spikes)} loss spike(s) in this run, first at step {spikes.spikes[0]} "
                        "(rows with loss_spike in metrics.jsonl)")
    return TrainOutcome(step, "finished", last_loss, eval_loss, saved)
