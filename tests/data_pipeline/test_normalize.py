"""Normalisation: NFC, control characters, whitespace, optional mojibake repair, dedup key."""

import pytest

from data_pipeline.normalize import NormalizeConfig, dedup_key, fix_cp1252_mojibake, fix_mojibake, normalize_text

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_nfc_composes_combining_marks():
    assert normalize_text("cafe\u0301") == "caf\u00e9"


def test_control_and_zero_width_characters_removed_tabs_and_newlines_kept():
    assert normalize_text("a\x00b\u200bc\x1bd\te\nf") == "abcd\te\nf"


def test_whitespace_cleanup_keeps_indentation_and_paragraphs():
    text = "  line one   \r\n    indented code\r\n\n\n\n\nnext para  "
    assert normalize_text(text) == "line one\n    indented code\n\nnext para"
    assert normalize_text("a   b", NormalizeConfig(collapse_spaces=True)) == "a b"


# UTF-8 read as cp1252: "à" (C3 A0) becomes "Ã" + U+00A0, a no-break space that must survive.
BROKEN = "café déjà vu".encode("utf-8").decode("cp1252")


def test_mojibake_repair_is_optional():
    assert BROKEN == "cafÃ© dÃ©jÃ\u00a0 vu"
    assert normalize_text(BROKEN) == BROKEN
    assert normalize_text(BROKEN, NormalizeConfig(fix_mojibake=True)) == "café déjà vu"
    assert fix_mojibake("plain ascii") == "plain ascii"


def test_cp1252_fallback_repairs_without_ftfy():
    assert fix_cp1252_mojibake(BROKEN) == "café déjà vu"
    assert fix_cp1252_mojibake("plain ascii") == "plain ascii"
    # Not a cp1252 misreading (the no-break space lost, as copy-paste does): left alone.
    assert fix_cp1252_mojibake("cafÃ© dÃ©jÃ  vu") == "cafÃ© dÃ©jÃ  vu"
    assert fix_cp1252_mojibake("Ãœber naïve €") == "Ãœber naïve €"


def test_ftfy_is_used_when_installed():
    ftfy = pytest.importorskip("ftfy", reason="ftfy is optional (setup.py does not install it); "
                               "without it fix_mojibake is the cp1252 fallback tested above")
    text = "cafÃ© dÃ©jÃ  vu"  # the fallback leaves it alone, so only ftfy can change it
    assert fix_mojibake(text) == ftfy.fix_text(text, normalization="NFC")
    assert fix_mojibake(BROKEN) == "café déjà vu"


def test_dedup_key_ignores_case_and_layout():
    assert dedup_key("Hello   World\n\nFoo") == dedup_key("hello world foo")
