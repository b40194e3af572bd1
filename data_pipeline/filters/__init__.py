"""Quality filters. Each is a dataclass whose fields are its thresholds (defaults from its paper)
with ``name``, ``apply(text) -> (text, reason | None)`` (``reason`` names the rule broken) and
``evaluate(text) -> (text, Drop | None)``, the same decision with the measured value and the
threshold it crossed (``drop.py``)."""

from __future__ import annotations

from data_pipeline.filters.c4 import C4Filter
from data_pipeline.filters.drop import Drop
from data_pipeline.filters.fineweb import FineWebFilter
from data_pipeline.filters.gopher_quality import GopherQualityFilter
from data_pipeline.filters.gopher_repetition import GopherRepetitionFilter

__all__ = ["C4Filter", "Drop", "FineWebFilter", "GopherQualityFilter", "GopherRepetitionFilter", "apply_filters",
           "evaluate_filters"]


def evaluate_filters(text: str, filters: list) -> tuple[str, Drop | None]:
    """Run enabled filters in order; stop at the first drop. Returns (text, Drop or None)."""
    for f in filters:
        if f.enabled:
            text, drop = f.evaluate(text)
            if drop is not None:
                return text, drop
    return text, None


def apply_filters(text: str, filters: list) -> tuple[str, str | None]:
    """:func:`evaluate_filters` with the drop's reason only. Returns (text, reason or None)."""
    for f in filters:
        if f.enabled:
            text, reason = f.apply(text)
            if reason is not None:
                return text, reason
    return text, None
