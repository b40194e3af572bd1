"""Quality filters. Each is a dataclass whose fields are its thresholds (defaults from its paper)
with ``name`` and ``apply(text) -> (text, reason | None)``; ``reason`` names the rule broken."""

from __future__ import annotations

from data_pipeline.filters.c4 import C4Filter
from data_pipeline.filters.fineweb import FineWebFilter
from data_pipeline.filters.gopher_quality import GopherQualityFilter
from data_pipeline.filters.gopher_repetition import GopherRepetitionFilter

__all__ = ["C4Filter", "FineWebFilter", "GopherQualityFilter", "GopherRepetitionFilter", "apply_filters"]


def apply_filters(text: str, filters: list) -> tuple[str, str | None]:
    """Run enabled filters in order; stop at the first drop. Returns (text, reason or None)."""
    for f in filters:
        if f.enabled:
            text, reason = f.apply(text)
            if reason is not None:
                return text, reason
    return text, None
