"""The command lines' argument parsing: an argparse parser whose refusals are one line with the user-error exit
code (typed_yaml/errors.py), and the argument types the entry points share (a positive number, a fraction, ...),
each refusing with the rule it checks. No torch: `llm-forge plan` starts in a fraction of a second.
"""
from __future__ import annotations

import argparse
import math
import re

from typed_yaml.errors import EXIT_USER


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one line, `prog: error: ...` with exit 2 and no usage block, and which reads a
    number-looking token as a value: argparse takes "-1e19" (exponent) or "-inf" for an option name and reports
    "expected one argument"; no option of ours looks like a number, so the type's own message ("must be positive")
    is what the user sees. Widening this matcher is the only hook argparse has."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message: str) -> None:
        self.exit(EXIT_USER, f"{self.prog}: error: {message}\n")


def _number(text: str, kind: type, ok, rule: str):
    """`text` read as `kind` (float or int) and checked by `ok`; argparse.ArgumentTypeError saying `rule` if not."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {'float' if kind is float else 'integer'} value: {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value


def positive(text: str) -> float:
    """An argparse type: a positive, finite number."""
    return _number(text, float, lambda x: x > 0 and math.isfinite(x), "must be positive and finite")


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    return _number(text, float, lambda x: 0 < x <= 1, "must be in (0, 1]")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _number(text, int, lambda x: x >= 1, "must be a positive integer")


def positive_ints(text: str) -> tuple[int, ...]:
    """An argparse type: a comma-separated list of positive integers, e.g. 1,2,4,8."""
    try:
        degrees = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not degrees or min(degrees) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return degrees
