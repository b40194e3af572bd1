"""Reward functions: `grpo_rloo.reward` and `eval.reward` name Python functions (TRL's convention) or the trained RM.

A function is given as `path/to/file.py:fn` or `package.module:fn` and called as
`fn(prompts, completions, **fields) -> list[float]`: `prompts` as the data gives them (a string, or a list of
messages), `completions` the decoded replies (strings), and one keyword per extra field of the prompt rows (a list,
one value per completion, e.g. `answer=[...]`). Several functions are summed with `weights`. The bundled task's
checker is `llm.align.task:sort_reward`. Every failure — a spec without ':', a file or module that is not there,
a missing or non-callable attribute, an import or call that raises or calls sys.exit, a call that takes longer than
`timeout_s` (the config's reward_timeout_s), a result that is not one finite number per completion — raises
RewardError naming the spec and, where one sample is at fault, that sample's prompt and completion; the stage stops
and the entry point exits 2. The user's code runs in the stage's process: os._exit or a crash of the interpreter
cannot be contained, and the time limit (SIGALRM) holds on the main thread only (every rank's loop runs there).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from llm.config import ConfigError

RM = "rm"
"""The entry of `grpo_rloo.reward` that means the trained reward model (its normalised score)."""


class RewardError(ConfigError):
    pass


class _TimedOut(BaseException):
    """Raised into a reward function by SIGALRM: a BaseException, so the user's own `except Exception` cannot
    swallow it."""


@contextmanager
def time_limit(seconds: float):
    """Raise _TimedOut in the block after `seconds` (0 or off the main thread: no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _TimedOut()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 1] + "…"


def load_function(spec: str) -> Callable:
    """The callable named by `path/to/file.py:fn` or `package.module:fn`."""
    if spec.count(":") != 1:
        raise RewardError(f"reward {spec!r}: give 'path/to/file.py:function' or 'package.module:function'")
    where, name = spec.split(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise RewardError(f"reward {spec!r}: no file {path}")
        mod_spec = importlib.util.spec_from_file_location(f"_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except SystemExit as e:
            raise RewardError(f"reward {spec!r}: importing {path} called sys.exit({e.code!r})") from None
        except Exception as e:  # the user's file: any error in it is reported as theirs, with its type
            raise RewardError(f"reward {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise RewardError(f"reward {spec!r}: cannot import module {where!r} ({e})") from None
        except SystemExit as e:
            raise RewardError(f"reward {spec!r}: importing {where} called sys.exit({e.code!r})") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise RewardError(f"reward {spec!r}: {where} has no attribute {name!r}")
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: {where}.{name} is not callable")
    return fn


class RewardFunctions:
    """The weighted sum of reward functions (no 'rm' entry: the RM is scored by the stage, on tokens).

    timeout_s: seconds one call of one function (on a whole batch of completions) may take; 0: no limit.
    where: prefixed to every error of a call (e.g. "stage grpo_rloo: grpo_rloo.reward"), so the line names the stage
    and key."""

    def __init__(self, specs: list[str], weights: list[float] | None = None, timeout_s: float = 0.0,
                 where: str = ""):
        if weights is not None and len(weights) != len(specs):
            raise RewardError(f"{len(weights)} reward weights for {len(specs)} rewards {specs}")
        self.specs = specs
        self.weights = weights if weights is not None else [1.0] * len(specs)
        self.timeout_s = timeout_s
        self.where = f"{where}: " if where else ""
        self.fns = [load_function(s) for s in specs]

    def __call__(self, prompts: list, completions: list[str], fields: list[dict]) -> list[float]:
        """The weighted reward of each completion; fields: the extra fields of each completion's prompt row."""
        keys = sorted({k for f in fields for k in f})
        kwargs = {k: [f.get(k) for f in fields] for k in keys}
        total = [0.0] * len(completions)
        batch = (f"called on {len(completions)} completion(s), the first prompt {_short(prompts[0])} and completion "
                 f"{_short(completions[0])}") if completions else "called on no completion"
        for spec, w, fn in zip(self.specs, self.weights, self.fns):
            try:
                with time_limit(self.timeout_s):
                    out = fn(prompts, completions, **kwargs)
            except _TimedOut:
                raise RewardError(f"{self.where}reward {spec!r} took longer than reward_timeout_s="
                                  f"{self.timeout_s:g} s, {batch}") from None
            except SystemExit as e:
                raise RewardError(f"{self.where}reward {spec!r} called sys.exit({e.code!r}), {batch}") from None
            except Exception as e:  # the user's function: reported as theirs
                raise RewardError(f"{self.where}reward {spec!r} raised {type(e).__name__}: {e}, {batch}") from None
            if not isinstance(out, (list, tuple)) or len(out) != len(completions):
                raise RewardError(f"{self.where}reward {spec!r} must return a list of {len(completions)} floats, got "
                                  f"{type(out).__name__}{'' if not hasattr(out, '__len__') else f' of {len(out)}'}"
                                  f", {batch}")
            for i, r in enumerate(out):
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
                    raise RewardError(f"{self.where}reward {spec!r} returned {r!r} for completion {i} (prompt "
                                      f"{_short(prompts[i])}, completion {_short(completions[i])}); need finite floats")
                total[i] += w * float(r)
        return total


def function_specs(specs: list[str]) -> list[str]:
    return [s for s in specs if s != RM]
