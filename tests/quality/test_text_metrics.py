"""quality/text_metrics.py and the shipped WER/CER modules: hand-counted errors, Swedish letters, normalisation."""

from __future__ import annotations

import pytest

from qwen_swe.quality.text_metrics import error_rates, load_metric, normalise_for_scoring


def test_wer_module_matches_hand_counted_errors():
    wer = load_metric("wer")
    # "er" -> "dig" is one substitution in three words
    assert wer.compute(predictions=["hej på dig"], references=["hej på er"]) == pytest.approx(1 / 3)
    # corpus level: (1 deletion + 2 insertions) / (4 + 2) reference words, not a mean of sentence rates
    assert wer.compute(predictions=["tåget går klockan", "god natt sov gott"],
                       references=["tåget går klockan sju", "god natt"]) == pytest.approx(3 / 6)
    assert wer.compute(predictions=["älgen stod still"], references=["älgen stod still"]) == 0.0


def test_cer_module_counts_swedish_letters_as_one_character():
    cer = load_metric("cer")
    assert cer.compute(predictions=["bat"], references=["båt"]) == pytest.approx(1 / 3)  # å -> a
    # "sjö" -> "sjo" (1) and "hus" -> "huset" (+2 insertions): 3 edits over 7 characters including the space
    assert cer.compute(predictions=["sjo huset"], references=["sjö hus"]) == pytest.approx(3 / 7)
    # decomposed ö (o + combining diaeresis) is normalised to NFC before scoring, so it is no error
    assert error_rates(["Sjö"], ["sjo\u0308"])["cer"] == 0.0


def test_scoring_ignores_case_and_punctuation_but_not_words():
    assert normalise_for_scoring("Hej, hur mår du?") == "hej hur mår du"
    rates = error_rates(["Hej, hur mår du?"], ["hej hur mår ni"])
    assert rates == {"wer": pytest.approx(1 / 4), "cer": pytest.approx(2 / 14)}
    with pytest.raises(ValueError, match="empty reference"):
        load_metric("wer").compute(predictions=["x"], references=[" "])
