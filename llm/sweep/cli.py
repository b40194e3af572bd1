"""A whole sweep as launch/sweep.py runs it, from its parsed arguments to an exit status: 0 done, 1 a failed run
(or no law), 2 a user error, 130 interrupted; every error printed as one line (the first two by launch/cli.py)."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from typed_yaml.files import read_json
from llm.sweep import UserError
from llm.sweep.families import parse_families
from llm.sweep.fit import fit_and_write
from llm.sweep.local import run_local
from llm.sweep.points import check_base, prepare
from llm.sweep.rundir import collect_point, finished, point_dir
from llm.sweep.slurm import check_slurm, run_slurm
from typed_yaml import log, runlock

PROG = "sweep.py"


def preflight(args) -> None:
    """The cheap checks, run before the grid is designed (a minute or more for wide budgets): with --slurm the SLURM
    commands and the job script, then the base config and its prepared data. UserError naming the first problem."""
    if args.slurm and not args.fit_only:
        check_slurm(wait=not args.no_wait)
    check_base(Path(args.config), args.fit_only)


def collect(out: Path, name: str) -> None:
    """--collect-point NAME (launch/slurm/sweep.sbatch, after a task's run): write the point's done.json, holding the
    point's lock (against a local run of it)."""
    doc = read_json(out / "sweep.json", dict, "sweep file")
    point = next((q for q in doc["points"] if q["name"] == name), None)
    if point is None:
        raise UserError(f"--collect-point {name}: not a point of {out / 'sweep.json'}")
    runlock.lock_dir(point_dir(out, point["name"]), f"sweep point {point_dir(out, point['name'])}")
    collect_point(out, point)


def check_args(args) -> None:
    """The arguments argparse cannot check alone; UserError naming the first wrong one."""
    if not args.budgets:
        raise UserError("--budgets is required: FLOP budgets such as --budgets 1e13 3e13 1e14")
    if args.eval_tokens < 1:
        raise UserError(f"--eval-tokens {args.eval_tokens} must be a positive number of tokens")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be at least 1 run per point")
    if args.bootstrap < 1:
        raise UserError(f"--bootstrap {args.bootstrap} must be a positive number of resamples")
    parse_families(getattr(args, "family", None))


def sweep(args, out: Path) -> None:
    """Design (or resume) the sweep in `out`, run its unfinished points and fit; `out` is locked by the caller."""
    doc = prepare(args)
    n_done = len(finished(out, doc))
    log.info(f"sweep: {len(doc['budgets'])} budgets, {len(doc['points'])} points ({n_done} finished) in {out}; "
             f"grid centred on {doc['law']}")
    for note in doc["notes"]:
        log.info(f"sweep: note: {note}")
    if args.fit_only:
        pass
    elif args.slurm:
        run_slurm(out, doc, args.sbatch_arg, wait=not args.no_wait)
        if args.no_wait:
            return
    else:
        run_local(out, doc)
    fit_and_write(out, doc, args.bootstrap, args.seed)


def run(args) -> int:
    """Run launch/sweep.py with its parsed arguments `args`; the exit status. A mistake raises a UserError (exit 2),
    a point that failed RunFailed (exit 1); launch/cli.py prints them."""
    out = Path(args.out)
    created = False
    # A kill (SIGTERM: `kill`, a scheduler) stops the sweep the way Ctrl-C does, so the running point is sent
    # SIGTERM too and saves a checkpoint to resume from, instead of training on as an orphan.
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (called from a harness): SIGTERM keeps its disposition
        previous = None
    try:
        if args.collect_point:
            collect(out, args.collect_point)
            return 0
        check_args(args)
        preflight(args)
        created = not out.exists()  # a refused sweep leaves no directory behind (the lock made it)
        runlock.lock_dir(out, f"--out {out}")  # before the grid's design and any write; held until the end
        sweep(args, out)
    except KeyboardInterrupt:  # user errors (2) and a failed point (1) leave as UserErrors (launch/cli.py)
        print(f"{PROG}: interrupted; finished points are kept (done.json), the running one was stopped at a "
              "checkpoint: rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        runlock.release_all()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
