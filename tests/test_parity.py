"""Parity: what training builds equals what qwen_tts inference feeds and computes, per layout and shape."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

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


def without_text_projection(original):
    def input_embeddings(self, batch):  # the text channel straight from the text embedding (same shape, wrong graph)
        text = self.talker.get_text_embeddings()(batch.text_ids)
        hidden = self.talker.config.hidden_size
        return original(self, batch) - self.talker.text_projection(text) + text[..., :hidden]
    return input_embeddings


def test_parity_catches_a_missing_text_projection(swedish_model, monkeypatch):
    """Bug A of the public scripts: the check must fail when text_projection is skipped."""
    monkeypatch.setattr(TalkerObjective, "input_embeddings", without_text_projection(TalkerObjective.input_embeddings))
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


@pytest.fixture(scope="module")
def loud_model(tiny_06b, tmp_path_factory):
    """The tiny model with logits at a released model's scale (codebook-0 and sub-talker heads scaled up until the
    largest logits are around 20, as a fitted model's are)."""
    from safetensors.torch import load_file, save_file

    folder = swedish_copy(tiny_06b, tmp_path_factory.mktemp("parity") / "loud")
    weights_file = folder / "model.safetensors"
    state = load_file(str(weights_file))
    for name in state:
        if name == "talker.codec_head.weight" or name.startswith("talker.code_predictor.lm_head."):
            state[name] = state[name] * 60.0
    save_file(state, str(weights_file), metadata={"format": "pt"})
    return folder


def shifted_logits(original):
    def talker_forward(self, batch):  # every position scored with the next position's logits: a double shift
        hidden, logits = original(self, batch)
        return hidden, torch.roll(logits, shifts=-1, dims=1)
    return talker_forward


def wrong_hidden_state(original):
    def sub_talker_inputs(self, hidden, batch):  # the frame's own position instead of the one that predicted it
        moved = dataclasses.replace(batch, sub_positions=(batch.sub_positions + 1).clamp(max=hidden.shape[1] - 1))
        return original(self, hidden, moved)
    return sub_talker_inputs


def test_parity_holds_at_real_logit_scale_and_still_catches_each_bug(loud_model, monkeypatch):
    from qwen_swe.layout import SequenceLayout
    from qwen_swe.modeling import load_model

    from .helpers import random_samples

    wrapper = load_model(str(loud_model))
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    batch = layout.collate([layout.build(s, "streaming") for s in random_samples(wrapper.model, count=2, seed=0)])
    with torch.no_grad():
        _, logits = TalkerObjective(wrapper.model).talker_forward(batch)
    assert float(logits.abs().max()) > 15  # a released model's scale

    exact = parity.run_parity(str(loud_model), layouts=["streaming"], frames=3)
    assert exact and all(r.ok for r in exact), [r.as_dict() for r in exact]
    in_float32 = parity.run_parity(str(loud_model), layouts=["streaming"], frames=3, dtype=torch.float32)
    assert max(r.talker_logits for r in in_float32) > 3 * max(r.talker_logits for r in exact)  # why float64

    bugs = {"input_embeddings": without_text_projection, "talker_forward": shifted_logits,
            "sub_talker_inputs": wrong_hidden_state}
    for method, make in bugs.items():
        with monkeypatch.context() as patch:
            patch.setattr(TalkerObjective, method, make(getattr(TalkerObjective, method)))
            broken = parity.run_parity(str(loud_model), layouts=["streaming"], frames=3)
        assert broken and not any(r.ok for r in broken), (method, [r.as_dict() for r in broken])
