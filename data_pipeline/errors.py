"""The one exception type for a user's mistake in data preparation.

Bad inputs, bad settings and bad output paths raise :class:`DataError` (or a subclass), whose
message is a single line naming the file (and line, or key) and what to change. The command line
prints it as ``error: <message>`` and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from typed_yaml.errors import UserError


class DataError(UserError, ValueError):
    """A user mistake; ``str(exc)`` is one line meant to be printed as is (exit 2, typed_yaml/errors.py)."""
