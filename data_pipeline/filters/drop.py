"""What a filter found when it dropped a document: the rule, the measured value and the threshold.

``dropped/*.jsonl`` rows carry these three (``value``, ``drop_if``, ``threshold``) so that a
reader can check a drop without re-running the filter: the document was dropped because
``value drop_if threshold`` held, e.g. ``0.34 > 0.3``.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Drop(NamedTuple):
    """A drop and its evidence. ``drop_if`` is one of ``<``, ``<=``, ``>``, ``>=``."""

    reason: str
    value: float
    drop_if: str
    threshold: float

    def holds(self) -> bool:
        """Whether ``value drop_if threshold`` is true (it must be, for every drop a filter returns)."""
        return _OPS[self.drop_if](self.value, self.threshold)

    def evidence(self) -> dict:
        """The fields a dropped row carries (floats rounded to 4 decimals: enough to read, stable on disk)."""
        value = round(self.value, 4) if isinstance(self.value, float) else self.value
        return {"value": value, "drop_if": self.drop_if, "threshold": self.threshold}
