"""quality/evaluation.py (`qwen-swe eval`) end to end on tiny models (short generations): the held-out loss is the
training objective's, synthesis metrics, eval.json/eval.md/TensorBoard/WAVs, the in-training synthesis hook, and
named voices compared with their training speaker."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.quality.text_metrics import error_rates


def test_eval_end_to_end_on_a_tiny_model(swedish_wrapper, tiny_asr, tmp_path):
    """Held-out loss through the trainer's objective, synthesis metrics, eval.json/eval.md/TensorBoard/WAVs."""
    import torch

    from qwen_swe.data.stream import ShardIndex, load_samples_by_key
    from qwen_swe.layout import SequenceLayout
    from qwen_swe.objective import TalkerObjective
    from qwen_swe.quality.evaluation import EvalConfig, run_evaluation
    from qwen_swe.quality.synth import SamplingSettings

    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=2, hidden=64, eval_samples=3)
    wrapper = swedish_wrapper
    max_new_tokens = 4
    config = EvalConfig(model="tiny-0.6b-sv", out=str(tmp_path / "eval"), shards=str(shards), speakers=1,
                        max_sentences=2, batch_size=2, asr=str(tiny_asr), progress=False,
                        sampling=SamplingSettings(max_new_tokens=max_new_tokens, seed=3))
    report = run_evaluation(config, say=lambda _m: None, wrapper=wrapper)

    # the held-out loss is the training objective's loss: with one batch holding the whole split they are equal
    index = ShardIndex(shards, "eval")
    samples = load_samples_by_key(index, [e["key"] for s in index.shards for e in s.entries])
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    with torch.inference_mode():
        direct = TalkerObjective(wrapper.model)(layout.collate([layout.build(s, "streaming") for s in samples]))
    assert report["metrics"]["heldout_loss"] == pytest.approx(float(direct["loss"]), rel=1e-5)

    files = report["synthesis"]["files"]
    assert [f["text"] for f in files] == ["Hej, hur mår du?", "Tåget till Göteborg går klockan sju."]
    for record in files:
        assert record["cut"] == (record["frames"] >= max_new_tokens - 1)
        assert record["seconds"] == pytest.approx(record["frames"] / 12.5)
        assert record["duration_ratio"] == pytest.approx(record["seconds"] / record["expected_seconds"])
        assert -1.0 <= record["speaker_similarity"] <= 1.0
    metrics = report["metrics"]
    assert metrics["eos_runaway_rate"] == pytest.approx(np.mean([f["cut"] for f in files]))
    # WER/CER are the shipped modules applied to the pipeline's transcripts
    assert metrics["wer"] == pytest.approx(error_rates([f["text"] for f in files],
                                                       [f["transcript"] for f in files])["wer"])
    out = tmp_path / "eval"
    assert json.loads((out / "eval.json").read_text())["metrics"] == metrics
    assert "| heldout_loss |" in (out / "eval.md").read_text()
    assert sorted(p.name for p in (out / "audio").glob("*.wav")) == ["000_spk0.wav", "001_spk0.wav"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"), size_guidance={"audio": 0}).Reload()
    assert {"eval/heldout_loss", "eval/wer", "eval/eos_runaway_rate"} <= set(events.Tags()["scalars"])
    assert len(events.Tags()["audio"]) == 2

    # the training hook: a held-out voice says a fixed sentence, logged as audio at the given step
    from torch.utils.tensorboard import SummaryWriter

    from qwen_swe.quality.training_audio import synthesize_for_tensorboard

    with SummaryWriter(str(tmp_path / "train_tb")) as writer:
        (result,) = synthesize_for_tensorboard(wrapper, writer, step=7, sentences=["Hej!"], shards=shards,
                                               settings=SamplingSettings(max_new_tokens=3))
    logged = EventAccumulator(str(tmp_path / "train_tb"), size_guidance={"audio": 0}).Reload()
    assert logged.Tags()["audio"] == [f"synthesis/000_{result.voice}"]
    assert [e.step for e in logged.Scalars("synthesis/eos_runaway_rate")] == [7]


def test_named_voices_are_compared_with_their_training_speaker(tiny_custom, tiny_06b, tmp_path):
    """A custom-voice model's named voice is compared with the longest train-split clip of its speaker (the name
    itself, case aside, or the speaker the export recorded), embedded by --speaker-model, and paced like that
    speaker; a voice whose speaker has no clip gets no similarity, is paced like the held-out speakers, and is named
    in a note."""
    from qwen_swe.language import add_language_to_folder
    from qwen_swe.quality.evaluation import EvalConfig, run_evaluation
    from qwen_swe.quality.references import spoken_characters
    from qwen_swe.quality.synth import SamplingSettings

    model = tmp_path / "custom"
    shutil.copytree(tiny_custom, model)
    add_language_to_folder(model, "swedish")
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=6, hidden=64, eval_samples=2,
                              speakers=("Alva", "cecilia"))
    entries = json.loads((shards / "train" / "train-000000.entries.json").read_text())
    alva_entries = entries[0::2]  # the fixture alternates its speakers
    longest_alva = max(alva_entries, key=lambda e: e["frames"])["key"]
    notes: list[str] = []
    config = EvalConfig(model=str(model), out=str(tmp_path / "eval"), shards=str(shards), heldout=False,
                        mode="custom", speaker_model=str(tiny_06b), max_sentences=1, progress=False,
                        sampling=SamplingSettings(max_new_tokens=4, seed=3))
    report = run_evaluation(config, say=notes.append)

    synthesis = report["synthesis"]
    assert synthesis["voices"] == ["alva", "bertil"]
    (reference,) = synthesis["references"]
    assert reference["speaker"] == "Alva" and reference["key"] == longest_alva
    alva, bertil = synthesis["files"]
    assert -1.0 <= alva["speaker_similarity"] <= 1.0 and bertil["speaker_similarity"] is None
    pace = reference["seconds"] / spoken_characters(reference["text"])
    assert alva["expected_seconds"] == pytest.approx(pace * spoken_characters(alva["text"]))
    assert bertil["expected_seconds"] is not None and bertil["expected_seconds"] != alva["expected_seconds"]
    assert report["metrics"]["speaker_similarity"] == pytest.approx(alva["speaker_similarity"])
    assert any("no train-split clip for voice(s) bertil" in note for note in notes)
    assert synthesis["speaker_embedder"].startswith(str(tiny_06b))

    # an exported voice is looked up by the training speaker the export recorded for it
    config_path = model / "config.json"
    recorded = json.loads(config_path.read_text())
    recorded.setdefault("qwen_swe", {})["export"] = {"speaker_sources": {"bertil": "cecilia"}}
    config_path.write_text(json.dumps(recorded))
    config.out = str(tmp_path / "eval-recorded")
    report = run_evaluation(config, say=notes.append)
    assert [r["speaker"] for r in report["synthesis"]["references"]] == ["Alva", "cecilia"]
    assert all(-1.0 <= f["speaker_similarity"] <= 1.0 for f in report["synthesis"]["files"])


def test_each_source_is_evaluated_on_its_own_as_metric_at_source(swedish_wrapper, tmp_path):
    """--source: each corpus's held-out loss and cloning metrics equal evaluating that corpus alone."""
    from qwen_swe.quality.evaluation import EvalConfig, run_evaluation
    from qwen_swe.quality.synth import SamplingSettings

    sources = {name: str(synthetic_shards(tmp_path / name, shards=1, per_shard=2, hidden=64, eval_samples=3,
                                          seed=seed, prefix=f"{name}-", speakers=(f"{name}0", f"{name}1")))
               for seed, name in enumerate(("swedish", "english"))}

    def evaluate(out: str, **where) -> dict:
        config = EvalConfig(model="tiny-0.6b-sv", out=str(tmp_path / out), speakers=1, max_sentences=1,
                            batch_size=1, progress=False, sampling=SamplingSettings(max_new_tokens=3, seed=3,
                                                                                    do_sample=False), **where)
        return run_evaluation(config, say=lambda _m: None, wrapper=swedish_wrapper)

    both = evaluate("both", sources=tuple(sources.items()))
    assert both["heldout"] is None and set(both["sources"]) == set(sources)
    for name, folder in sources.items():
        alone = evaluate(name, shards=folder)["metrics"]
        for metric in ("heldout_loss", "codebook0_accuracy", "speaker_similarity", "eos_runaway_rate"):
            assert both["metrics"][f"{metric}@{name}"] == pytest.approx(alone[metric], rel=1e-6), (name, metric)
        assert both["sources"][name]["synthesis"]["voices"][0].startswith(name)  # its own held-out speaker
    assert (tmp_path / "both" / "sources" / "english" / "audio").is_dir()
    assert "## Per source" in (tmp_path / "both" / "eval.md").read_text()
