"""Scalar sinks beside metrics.jsonl: TensorBoard event files and a Weights & Biases run.

`MetricsLogger` (metrics.py) owns them and hands each the row it has just written to metrics.jsonl, so every
sink shows the same numbers: every numeric key of the row, plotted against its `step`. Only the main rank
builds them. The heavy packages are imported here, on demand, so a run with both off never loads them.
"""
from __future__ import annotations

import os
from pathlib import Path

from llm.config import ConfigError, LoggingConfig

# Keys of a metrics row that are not scalars to plot: the x axis, and the wall clock each sink records itself.
NOT_SCALARS = ("step", "time")


def scalars(row: dict) -> dict[str, float]:
    """The numeric entries of a metrics row, the x axis and the timestamp left out (a bool counts as 0/1)."""
    return {k: float(v) for k, v in row.items() if k not in NOT_SCALARS and isinstance(v, (int, float))}


class TensorBoardSink:
    """Event files under `log_dir`; on resume, events past `resume_step` (a crashed tail) are hidden."""

    def __init__(self, log_dir: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter
        # purge_step makes TensorBoard drop the old events at and after it, as metrics.jsonl drops its rows.
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step else None)

    def write(self, row: dict) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, global_step=row["step"], walltime=row.get("time"))
        self.writer.flush()  # a run watched live, or killed, should show every step already logged

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run; 'offline' writes <dir>/wandb/offline-run-*/ and touches no network (`wandb sync` uploads it)."""

    def __init__(self, cfg: LoggingConfig, out_dir: Path, run_config: dict | None = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"logging.wandb={cfg.wandb!r} needs the wandb package: pip install -e .[wandb]") from None
        if cfg.wandb == "offline":
            os.environ["WANDB_MODE"] = "offline"  # also for anything wandb spawns, so nothing dials out
        # Each launch (a resume too) is its own W&B run: W&B refuses steps below the ones it already holds,
        # so continuing one run after a crash would lose the re-done steps. The name groups them.
        name = cfg.wandb_name or out_dir.resolve().name
        self.run = wandb.init(project=cfg.wandb_project, name=name, group=name, dir=str(out_dir), mode=cfg.wandb,
                              config=run_config, settings=wandb.Settings(silent=True, console="off"))

    def write(self, row: dict) -> None:
        self.run.log(scalars(row), step=row["step"])

    def close(self) -> None:
        import wandb
        self.run.finish()
        # finish() returns before wandb's service process has written the run file; teardown waits for it,
        # so the run is complete on disk when training returns (a test, or a sync right after, reads it).
        wandb.teardown()


def open_sinks(cfg: LoggingConfig | None, out_dir: Path, resume_step: int = 0, run_config: dict | None = None) -> list:
    """The sinks `cfg` turns on, writing under `out_dir`. Raises ConfigError if wandb is asked for but missing.

    run_config: the run's whole config as plain data; W&B files it with the run, so runs can be compared and
    filtered by any setting in its table."""
    if cfg is None:
        return []
    sinks = []
    if cfg.tensorboard:
        sinks.append(TensorBoardSink(out_dir / "tensorboard", resume_step))
    if cfg.wandb:
        sinks.append(WandbSink(cfg, out_dir, run_config))
    return sinks
