"""quality/compare.py: the gates refuse a model worse on any of them, promote within tolerance, refuse unfair
comparisons."""

from __future__ import annotations

import pytest

from qwen_swe.quality.compare import compare_reports

from ..helpers import eval_report


@pytest.mark.parametrize("worse", [{"heldout_loss": 2.1}, {"cer": 0.15}, {"speaker_similarity": 0.7},
                                   {"eos_runaway_rate": 0.1}])
def test_compare_refuses_a_model_worse_on_any_gate(worse):
    result = compare_reports(eval_report("a"), eval_report("b", **worse))
    assert result["verdict"] == "keep"
    (metric,) = worse
    assert [g["metric"] for g in result["gates"] if g["passed"] is False] == [metric]


def test_compare_promotes_within_tolerance_and_refuses_unfair_comparisons():
    a = eval_report("a")
    assert compare_reports(a, eval_report("b", heldout_loss=2.01, cer=0.105))["verdict"] == "promote"
    missing = compare_reports(a, eval_report("b", cer=None))
    assert missing["verdict"] == "keep" and any("measured only for A" in r for r in missing["reasons"])
    named = compare_reports(eval_report("a", wer=None), eval_report("b", wer=None), gates=["wer"])
    assert named["verdict"] == "keep"
    other_text = eval_report("b")
    other_text["synthesis"]["sentences"] = ["Något annat."]
    assert compare_reports(a, other_text)["verdict"] == "keep"
    assert compare_reports(a, other_text, allow_mismatch=True)["verdict"] == "promote"


def test_a_gate_on_one_source_with_a_share_of_a_as_tolerance():
    """"No worse than the base model on the English held-out set within 2%", and cloning similarity per corpus."""
    from qwen_swe.quality.compare import parse_gates, parse_tolerances

    def with_english(model: str, loss: float, similarity: float) -> dict:
        report = eval_report(model)
        report["metrics"].update({"heldout_loss@english": loss, "speaker_similarity@english": similarity})
        report["sources"] = {"english": {"synthesis": {"references": [{"key": "en0"}]}}}
        return report

    gates = parse_gates("heldout_loss@english,speaker_similarity@english")
    tolerances = parse_tolerances(["heldout_loss@english=2%"])
    base = with_english("base", loss=3.0, similarity=0.8)
    within = compare_reports(base, with_english("b", 3.05, 0.79), gates=gates, tolerances=tolerances)
    assert within["verdict"] == "promote"  # 3.05 <= 3.0 * 1.02; similarity within the metric's 0.02
    assert within["gates"][0]["tolerance"] == pytest.approx(0.06) and within["gates"][0]["tolerance_rule"] == "2% of A"
    forgot = compare_reports(base, with_english("b", 3.07, 0.79), gates=gates, tolerances=tolerances)
    assert forgot["verdict"] == "keep" and [g["passed"] for g in forgot["gates"]] == [False, True]
    assert "heldout_loss@english" in forgot["reasons"][0] and "2% of A" in forgot["reasons"][0]
    lost_cloning = compare_reports(base, with_english("b", 3.0, 0.7), gates=gates, tolerances=tolerances)
    assert [g["passed"] for g in lost_cloning["gates"]] == [True, False]
    # evaluated on other corpora: no fair comparison
    other = with_english("b", 3.0, 0.8)
    other["sources"] = {"german": other["sources"]["english"]}
    assert compare_reports(base, other, gates=gates, tolerances=tolerances)["verdict"] == "keep"
    with pytest.raises(ValueError, match="METRIC@SOURCE"):
        parse_gates("loudness@english")
    with pytest.raises(ValueError, match="share of A"):
        parse_tolerances(["heldout_loss@english=two%"])
