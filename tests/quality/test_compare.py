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
