"""The error contract: which exceptions are a user's to fix, how each is printed, and the exit codes of every command.

A `UserError` is a mistake or a condition the user can act on (a config key, a data file, a full disk, a checkpoint
that does not fit, a diverged run, a preemption). Its message is one line meant to be printed as is, and its class
carries the exit status. Every entry point runs through one wrapper (launch/cli.py) that prints a UserError as
"<label>: <message>" and exits with its code; any other exception is a bug and keeps its traceback (exit 1). No
entry point catches bare ValueError/OSError around library code: a library that finds a user's mistake raises a
UserError subclass, so a real bug never reads like one.

The exit codes (docs/architecture.md repeats this table; tests/test_errors.py holds the two together):
"""
from __future__ import annotations

EXIT_CODES = {
    0: "success",
    1: "an error that is not the user's: a bug (its traceback is printed), or a sweep point whose training failed "
       "(its log is named)",
    2: "a user error: a config key or file, a data file or row, a command-line argument, a full disk; one line says "
       "what to change",
    3: "training diverged: the loss or gradient norm became NaN/inf; the latest checkpoint is from before it",
    4: "hand-off error: a checkpoint that does not fit the alignment stage that asked for it",
    75: "preempted (SIGTERM/SIGUSR1): a checkpoint was saved; rerun the same command to resume (EX_TEMPFAIL, "
        "sysexits.h; launch/slurm/ requeues on it)",
    130: "interrupted (Ctrl-C, or SIGTERM to a sweep): finished work is kept; rerun the same command to resume "
         "(128 + SIGINT, the shell's convention)",
}
EXIT_OK, EXIT_BUG, EXIT_USER, EXIT_DIVERGED, EXIT_HANDOFF, EXIT_PREEMPTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 75, 130

__doc__ += "\n".join(f"    {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items()) + "\n"


class UserError(Exception):
    """A mistake or condition the user can act on; `str(exc)` is one line to print as is.

    `exit_code` is the command's exit status and `label` the word printed before the message. `announce` (under a
    launcher): whether this rank prints the line — None: the first rank of each node does, as every rank reaches
    the same verdict from the same config and files; True/False: a collective operation decided which rank saw the
    failure first (typed_yaml/disk.py's DiskFull)."""

    exit_code = EXIT_USER
    label = "error"
    announce: bool | None = None


class ConfigError(UserError, ValueError):
    """A user mistake in a config file, an override, a command-line argument or an input file the config names.

    Also a ValueError, as it always was: library callers that validate input with `except ValueError` keep working."""

    label = "config error"


class TrainingDiverged(UserError, RuntimeError):
    """The loss or the gradient norm became NaN/inf outside an fp16 overflow-skipped step, or the state about to be
    saved holds NaN/inf. Nothing is saved for that step: the latest checkpoint is from before it."""

    exit_code = EXIT_DIVERGED
    label = "training diverged"


class HandoffError(UserError, ValueError):
    """A checkpoint cannot be used by the (alignment) stage that asked for it; the message says why."""

    exit_code = EXIT_HANDOFF
    label = "hand-off error"


class Preempted(UserError):
    """A run stopped on SIGTERM/SIGUSR1 after saving what it needs to resume; the same command resumes it."""

    exit_code = EXIT_PREEMPTED
    label = "preempted"


def one_line(message: str) -> str:
    """`message` on one line: a YAML parser's or a library's multi-line message joined, its caret lines dropped."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip() and line.strip() != "^")
