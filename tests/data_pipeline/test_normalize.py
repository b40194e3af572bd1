"""Normalisation: NFC, control characters, whitespace, optional mojibake repair, dedup key."""

from data_pipeline.normalize import NormalizeConfig, dedup_key, fix_mojibake, normalize_text


def test_nfc_composes_combining_marks():
    assert normalize_text("cafe\u0301") == "caf\u00e9"


def test_control_and_zero_width_characters_removed_tabs_and_newlines_kept():
    assert normalize_text("a\x00b\u200bc\x1bd\te\nf") == "abcd\te\nf"


def test_whitespace_cleanup_keeps_indentation_and_paragraphs():
    text = "  line one   \r\n    indented code\r\n\n\n\n\nnext para  "
    assert normalize_text(text) == "line one\n    indented code\n\nnext para"
    assert normalize_text("a   b", NormalizeConfig(collapse_spaces=True)) == "a b"


def test_mojibake_repair_is_optional():
    broken = "cafÃ© dÃ©jÃ  vu"
    assert normalize_text(broken) == broken
    assert normalize_text(broken, NormalizeConfig(fix_mojibake=True)) == "café déjà vu"
    assert fix_mojibake("plain ascii") == "plain ascii"


def test_dedup_key_ignores_case_and_layout():
    assert dedup_key("Hello   World\n\nFoo") == dedup_key("hello world foo")
