"""ingest/transcript.py: the documented rules for what is spoken, paragraphs, sentences and words."""

from __future__ import annotations

import pytest

from qwen_swe.ingest.transcript import read_transcript, split_sentences

BOOK = """# Källa: en inläsning; den här raden läses inte
Kapitel 1

[Illustration: en karta]
Det var en gång en by. Där bodde en fiskare
som hette Anders! Han {sidan 12} rodde ut.

Kapitel två
Hösten kom med \u201dblåst\u201d och regn\u2026 Sen kom vintern?
"""


def test_rules_for_notes_brackets_headings_paragraphs_and_sentences():
    sentences = split_sentences(BOOK)
    assert [(s.paragraph, s.text) for s in sentences] == [
        (0, "Kapitel 1"),
        (1, "Det var en gång en by."),
        (1, "Där bodde en fiskare som hette Anders!"),  # a sentence runs over a line break
        (1, "Han rodde ut."),  # {sidan 12} is not spoken
        (2, "Kapitel två"),  # a line without closing punctuation before a capitalised one is a heading
        (2, 'Hösten kom med "blåst" och regn...'),  # an ellipsis followed by a space ends a sentence
        (2, "Sen kom vintern?"),
    ]
    assert sentences[2].words == ["Där", "bodde", "en", "fiskare", "som", "hette", "Anders!"]
    assert [s.index for s in sentences] == list(range(7))


def test_numbers_to_words_and_nfc_like_shards_build():
    (sentence,) = split_sentences("Kapitel 21 handlar om a\u030angest.\n", numbers_to_words=True)
    assert sentence.text == "Kapitel tjugoett handlar om ångest."


def test_bad_transcripts_name_the_file(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Hösten kom.".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8 .*iconv"):
        read_transcript(latin)
    notes = tmp_path / "notes.txt"
    notes.write_text("# bara en anteckning\n[och en bild]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes\.txt: no spoken text"):
        read_transcript(notes)
