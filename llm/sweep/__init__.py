"""An isoFLOP sweep: run a grid of pretraining points, fit your own scaling law, draw it and report it.

The grid's design is llm/scaling/grid.py (pure arithmetic): per budget C, sizes spread in log10 N around a law's
N_opt, shapes from the shape designer, D = C / 6N, batch and LR from plan.py's rule. This package runs it, in
modules named for what they hold:

- `points`: each point's pretraining config (DIR/points/NAME/config.yaml) and the sweep's record (DIR/sweep.json);
- `rundir`: the run directory's state: a point's done.json (its final eval loss), written atomically after its run;
- `local`: the points one after the other on this machine (debug mode), with their progress; `slurm`: as one job
  array through launch/slurm/sweep.sbatch, one task per point;
- `families`: --family, each point trained once per model family (model.moe on top of its shape, D from the
  family's own FLOPs per token);
- `fit`: the law (llm/scaling/law.py) fitted to the finished points, DIR/law.json; `report`: DIR/report.md;
  `plot`: DIR/isoflop.png; with families, one law per family and `compare`: their compute multiplier at equal
  loss with its bootstrap interval, DIR/compare.md and compare.png;
- `cli`: a whole sweep as launch/sweep.py runs it, its errors as exit codes.

Resumable: rerunning the same sweep skips finished points, runs the others (a killed run resumes from its
checkpoint), and re-fits. Any user error is a UserError (one line, exit 2); a failed run a RunFailed (exit 1,
naming its log).

One writer: the sweep locks DIR, and each point's directory while it runs the point (typed_yaml/runlock.py), so a
second sweep (or --fit-only) on a running one is refused, naming it. A point's trainer runs in its own session (a
terminal's Ctrl-C reaches only the sweep, which stops it at a checkpoint) but dies with the sweep: on Linux it is
sent SIGTERM when the sweep dies, even by kill -9, and saves a checkpoint and exits; a rerun waits for a trainer
still doing so before it starts the point again, and the trainer's own lock on its run directory refuses any second
one.
"""
from __future__ import annotations

from pathlib import Path

from typed_yaml.errors import EXIT_BUG, UserError  # re-exported: the sweep's mistakes are UserErrors


ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the points' trainers are launch/pretrain.py, run from here."""


class RunFailed(UserError):
    """A point's training run exited non-zero; printed as one line naming its log, exit 1 (the run's own error is
    in its log, and may be a bug: not exit 2, which says the sweep's arguments were wrong)."""

    exit_code = EXIT_BUG
