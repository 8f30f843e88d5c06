"""quality/references.py: held-out references prefer speakers absent from training and their longest clip."""

from __future__ import annotations

import json

import pytest

from qwen_swe.data.synthetic import synthetic_shards


def test_references_prefer_speakers_absent_from_training_and_their_longest_clip(swedish_wrapper, tmp_path):
    from qwen_swe.data.shard_format import INDEX_NAME
    from qwen_swe.quality.references import heldout_references

    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=2, hidden=64, eval_samples=6)
    index = json.loads((shards / INDEX_NAME).read_text())
    index["stats"] = {"train": {"speakers": {"spk0": {}}}, "eval": {"speakers": {"spk0": {}, "spk1": {}, "spk2": {}}}}
    (shards / INDEX_NAME).write_text(json.dumps(index))
    entries = json.loads((shards / "eval" / "eval-000000.entries.json").read_text())
    spk1 = [e for e in entries if int(e["key"][-4:]) % 3 == 1]  # synthetic speakers are spk{i % 3}

    (reference,) = heldout_references(swedish_wrapper, shards, speakers=1)
    assert reference.speaker == "spk1"  # spk0 also trained, so it comes last
    assert reference.key == max(spk1, key=lambda e: e["frames"])["key"]
    assert reference.seconds == pytest.approx(reference.codes.shape[0] / 12.5)
    wav, rate = reference.audio()  # decoded with the model's codec: as long as its codes
    assert wav.shape[0] == pytest.approx(reference.seconds * rate, rel=0.01)
    assert [r.speaker for r in heldout_references(swedish_wrapper, shards, speakers=0)] == ["spk1", "spk2", "spk0"]
