"""Text normalisation applied to every document before filtering and deduplication.

Order matters: mojibake repair first (it needs the broken bytes as they are), then Unicode NFC
(so "é" as one code point and as e + combining accent hash alike in exact dedup), then control
characters, then whitespace. Newlines are kept: the line- and paragraph-level quality rules
(Gopher repetition, C4, FineWeb) depend on them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# C0/C1 controls except \t \n \r, plus the zero-width and BOM characters that survive NFC and
# make identical-looking documents hash differently.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200c\u200d\u2060\ufeff]")
_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace except newline
_TRAILING = re.compile(r"[^\S\n]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")


@dataclass
class NormalizeConfig:
    """Which normalisations run; all but mojibake repair are on by default."""

    nfc: bool = True
    """Unicode NFC composition (Unicode Standard Annex #15)."""
    strip_control: bool = True
    """Remove control and zero-width characters (keeps tab, newline)."""
    collapse_whitespace: bool = True
    """CRLF -> LF, trailing spaces removed, runs of >2 blank lines cut to one blank line.
    Runs of spaces inside a line are kept only when ``collapse_spaces`` is off."""
    collapse_spaces: bool = False
    """Collapse runs of spaces/tabs inside a line to one space. Off by default because it would
    destroy the indentation of code, which our bundled corpus (Python docs) is full of."""
    fix_mojibake: bool = False
    """Repair UTF-8 decoded as Latin-1/cp1252 ("cafÃ©" -> "café") with ftfy when installed."""


def fix_mojibake(text: str) -> str:
    """ftfy's repair when available, else :func:`fix_cp1252_mojibake`."""
    try:
        import ftfy  # optional: better coverage (mixed encodings, HTML entities)
    except ImportError:
        return fix_cp1252_mojibake(text)
    return ftfy.fix_text(text, normalization="NFC")


def fix_cp1252_mojibake(text: str) -> str:
    """The fallback without ftfy: re-decode text that round-trips through cp1252 -> UTF-8 (the
    commonest mojibake, UTF-8 read as cp1252) and leave anything else alone. The round trip
    needs every byte the misreading produced, e.g. the U+00A0 that "à" (C3 A0) becomes."""
    if not any(ch in text for ch in "ÃÂâ"):  # the lead bytes that mojibake of UTF-8 shows
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def normalize_text(text: str, cfg: NormalizeConfig | None = None) -> str:
    """Return the normalised text (never raises on any ``str`` input)."""
    cfg = cfg or NormalizeConfig()
    if cfg.fix_mojibake:
        text = fix_mojibake(text)
    if cfg.nfc:
        text = unicodedata.normalize("NFC", text)
    if cfg.collapse_whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if cfg.strip_control:
        text = _CONTROL.sub("", text)
    if cfg.collapse_spaces:
        text = _HSPACE.sub(" ", text)
    if cfg.collapse_whitespace:
        text = _TRAILING.sub("\n", text)
        text = _MANY_NEWLINES.sub("\n\n", text).strip()
    return text


def dedup_key(text: str) -> str:
    """The content compared by exact dedup: lower-cased, all whitespace runs collapsed, so
    documents differing only in case or layout count as the same (as in CCNet/FineWeb)."""
    return " ".join(text.lower().split())
