"""data/text.py: Swedish text normalisation (quotes, dashes, spaces, numbers to words) and transcript decoding."""

from __future__ import annotations

import pytest

from qwen_swe.data.text import decode_transcript, normalize_text


def test_text_normalisation():
    decomposed = "a\u030angstro\u0308m"  # å and ö as base letter + combining mark
    assert normalize_text(decomposed) == "ångström"
    assert normalize_text("”Hej”, sa hon. »Kom!« – Han’s") == '"Hej", sa hon. "Kom!" - Han\'s'
    assert normalize_text("vänta — nu … eller\u2011inte") == "vänta - nu ... eller-inte"
    assert normalize_text("  Hej\u00a0\u00a0där \t\n  du\u200b ") == "Hej där du"
    assert normalize_text("Det är 21 grader") == "Det är 21 grader"  # digits stay unless asked
    assert normalize_text("Det är 21 grader", numbers_to_words=True) == "Det är tjugoett grader"
    spelled = normalize_text("1999 kom 3:e, 3,5 kg, 25 % och 10\u00a0000 kr, -5 grader, 1000 år",
                             numbers_to_words=True)
    assert spelled == ("nittonhundranittionio kom tredje, tre komma fem kg, tjugofem procent och tiotusen kr, "
                       "minus fem grader, ettusen år")
    assert normalize_text("MP3", numbers_to_words=True) == "MP3"  # digits inside words are not numbers
    assert normalize_text(" \u200b ") == ""
    assert decode_transcript("hej".encode("utf-8-sig"), "x.txt") == "hej"
    with pytest.raises(ValueError, match="x.txt: not UTF-8"):
        decode_transcript("ångest".encode("latin-1"), "x.txt")
