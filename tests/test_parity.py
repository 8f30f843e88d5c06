"""Parity: what training builds equals what qwen_tts inference feeds and computes, per layout and shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qwen_swe import parity
from qwen_swe.layout import LAYOUTS
from qwen_swe.objective import TalkerObjective

from .helpers import swedish_copy


@pytest.fixture(scope="module", params=["tiny_06b", "tiny_17b"])
def swedish_model(request, tmp_path_factory):
    source = request.getfixturevalue(request.param)
    return swedish_copy(source, tmp_path_factory.mktemp("parity") / request.param)


def test_every_layout_language_and_speaker_matches_inference(swedish_model):
    results = parity.run_parity(str(swedish_model), layouts=list(LAYOUTS), frames=5)
    seen = {(r.layout, r.language) for r in results}
    for name in LAYOUTS:
        for language in ("auto", "german", "swedish"):
            assert (name, language) in seen
    for r in results:
        assert r.frames >= 2, r
        assert r.ok, r.as_dict()


def test_parity_catches_a_missing_text_projection(swedish_model, monkeypatch):
    """Bug A of the public scripts: the check must fail when text_projection is skipped."""
    original = TalkerObjective.input_embeddings

    def without_projection(self, batch):
        text = self.talker.get_text_embeddings()(batch.text_ids)
        hidden = self.talker.config.hidden_size
        # the same embeddings with the text channel taken straight from the text embedding (same shape, wrong graph)
        return original(self, batch) - self.talker.text_projection(text) + text[..., :hidden]

    monkeypatch.setattr(TalkerObjective, "input_embeddings", without_projection)
    results = parity.run_parity(str(swedish_model), layouts=["non_streaming"], frames=3)
    assert results and not any(r.ok for r in results)


def test_parity_cli_reports_json_and_exit_code(tiny_06b, tmp_path):
    swedish_model = swedish_copy(tiny_06b, tmp_path / "model")
    run = subprocess.run(
        [sys.executable, "-m", "qwen_swe", "parity", "--model", str(swedish_model), "--layout", "streaming",
         "--frames", "3", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["ok"] is True and report["results"]
    assert {r["language"] for r in report["results"]} >= {"auto", "swedish"}


def test_custom_voice_speakers_match_inference(tiny_custom):
    results = parity.run_parity(str(tiny_custom), layouts=["non_streaming", "streaming"], frames=4)
    assert results and all(r.speaker.startswith("speaker:") for r in results)
    assert all(r.ok for r in results), [r.as_dict() for r in results]
