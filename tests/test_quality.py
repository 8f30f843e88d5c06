"""Synthesis and evaluation: the shipped WER/CER modules, speaker similarity, audio statistics, compare's gates and
registry (fast, no model), and synth/eval end to end on tiny models (short generations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from .helpers import load_swedish_model

from qwen_swe.cli import main
from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.quality.audio_stats import audio_stats
from qwen_swe.quality.compare import compare_reports
from qwen_swe.quality.speaker import cosine_similarity
from qwen_swe.quality.text_metrics import error_rates, load_metric, normalise_for_scoring


# ------------------------------------------------------------------------------------------------ WER / CER


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


# ------------------------------------------------------------------------------------------------ speaker, audio


def test_cosine_similarity_values():
    assert cosine_similarity([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine_similarity([1.0, 0.0], [0.0, 3.0]) == pytest.approx(0.0)
    assert cosine_similarity([1.0, -1.0], [-1.0, 1.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in size"):
        cosine_similarity([1.0], [1.0, 2.0])


def test_speaker_similarity_of_a_voice_with_itself_is_one_and_with_another_voice_lower(swedish_wrapper):
    from qwen_swe.quality.speaker import load_speaker_embedder, speaker_similarity
    from qwen_swe.tiny import calibration_audio

    embedder = load_speaker_embedder(swedish_wrapper)  # the model's own speaker encoder
    voice = calibration_audio(seed=123, seconds=2.0)
    # another voice: other prosody, and every second sample kept, which doubles pitch and formants
    other = calibration_audio(seed=5, seconds=4.0)[::2]
    same = speaker_similarity(embedder, (voice, 24000), (voice.copy(), 24000))
    different = speaker_similarity(embedder, (voice, 24000), (other, 24000))
    assert same == pytest.approx(1.0, abs=1e-6)
    assert different < same - 1e-3


def test_speaker_model_folder_can_be_an_xvector_verifier(tmp_path):
    """--speaker-model: a transformers AudioXVector folder (random tiny WavLM here) instead of the model's encoder."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    from qwen_swe.quality.speaker import XVectorEmbedder, load_speaker_embedder, speaker_similarity
    from qwen_swe.tiny import calibration_audio

    torch.manual_seed(0)
    WavLMForXVector(WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                                num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1),
                                tdnn_dilation=(1, 1), xvector_output_dim=8)).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0).save_pretrained(tmp_path)
    embedder = load_speaker_embedder(tmp_path)
    assert isinstance(embedder, XVectorEmbedder)
    voice = calibration_audio(seed=123, seconds=2.0)
    assert speaker_similarity(embedder, (voice, 24000), (voice.copy(), 24000)) == pytest.approx(1.0, abs=1e-6)
    assert speaker_similarity(embedder, (voice, 24000), (calibration_audio(seed=5, seconds=4.0)[::2], 24000)) < 0.999
    with pytest.raises(ValueError, match="no config.json"):
        load_speaker_embedder(tmp_path / "missing")


def test_audio_stats_on_known_signals():
    rate = 24000
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stats = audio_stats(np.concatenate([tone, np.zeros(rate)]), rate)
    assert stats.seconds == pytest.approx(2.0)
    assert stats.peak == pytest.approx(0.5, abs=1e-4)
    assert stats.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2) / np.sqrt(2)), abs=0.01)
    assert stats.silence_rate == pytest.approx(0.5)
    assert audio_stats(np.zeros(100), rate).rms_dbfs == -120.0


# ------------------------------------------------------------------------------------------------ compare


def eval_report(model: str, **metrics) -> dict:
    base = {"heldout_loss": 2.0, "codebook0_accuracy": 0.3, "eos_accuracy": 0.9, "sub_talker_accuracy": 0.4,
            "wer": 0.2, "cer": 0.1, "speaker_similarity": 0.8, "duration_ratio": 1.0, "duration_error": 0.1,
            "silence_rate": 0.1, "eos_runaway_rate": 0.0}
    base.update(metrics)
    return {"model": model, "metrics": base, "sampling": {"seed": 0}, "heldout": {"split": "eval", "layouts": {}},
            "synthesis": {"sentences": ["Hej."], "references": [{"key": "k"}], "mode": "xvector",
                          "streaming": True, "asr": "asr", "speaker_embedder": "qwen3-tts speaker encoder"}}


def write_eval(folder: Path, report: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(report))
    return folder


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


def test_compare_command_promotes_keeps_and_rolls_back(tmp_path):
    models = {name: tmp_path / "models" / name for name in ("v1", "v2", "v3")}
    for folder in models.values():
        folder.mkdir(parents=True)
    evals = {"v1": write_eval(tmp_path / "e1", eval_report(str(models["v1"]))),
             "v2": write_eval(tmp_path / "e2", eval_report(str(models["v2"]), cer=0.05)),
             "v3": write_eval(tmp_path / "e3", eval_report(str(models["v3"]), heldout_loss=2.5))}
    registry = tmp_path / "registry"
    runner = CliRunner()

    promoted = runner.invoke(main, ["compare", str(evals["v1"]), str(evals["v2"]), "--registry", str(registry)])
    assert promoted.exit_code == 0, promoted.output
    assert "PROMOTE" in promoted.output
    assert (registry / "current").resolve() == models["v2"] and (registry / "previous").resolve() == models["v1"]
    assert json.loads((evals["v2"] / "comparison.json").read_text())["verdict"] == "promote"

    kept = runner.invoke(main, ["compare", str(evals["v2"]), str(evals["v3"]), "--registry", str(registry), "--json"])
    assert kept.exit_code == 1
    assert json.loads(kept.output)["verdict"] == "keep"
    assert (registry / "current").resolve() == models["v2"]  # the worse model was not promoted

    stale = runner.invoke(main, ["compare", str(evals["v1"]), str(evals["v3"]), "--registry", str(registry)])
    assert stale.exit_code != 0 and "compare the candidate against the current model" in stale.output

    rolled = runner.invoke(main, ["rollback", str(registry)])
    assert rolled.exit_code == 0, rolled.output
    assert (registry / "current").resolve() == models["v1"] and (registry / "previous").resolve() == models["v2"]
    events = [e["event"] for e in json.loads((registry / "registry.json").read_text())["history"]]
    assert events == ["init", "promote", "keep", "rollback"]


# ------------------------------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="module")
def swedish_wrapper(tiny_06b):
    """The tiny 0.6B-shaped Base model with Swedish registered, loaded once (shared with other test files)."""
    return load_swedish_model(tiny_06b)


@pytest.fixture(scope="module")
def tiny_asr(tmp_path_factory) -> Path:
    """A random-weight wav2vec2 CTC model with a Swedish letter vocabulary: garbage transcripts, real pipeline."""
    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    folder = tmp_path_factory.mktemp("tiny-asr")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{ch: i + 3 for i, ch in enumerate("abcdefghijklmnopqrstuvwxyzåäö")}}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
                            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    """A random-weight multilingual Whisper with a byte-level vocabulary and the special tokens Whisper's generate()
    needs to be told a language and a task (<|sv|>, <|transcribe|>, ...): garbage transcripts, real pipeline."""
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    folder = tmp_path_factory.mktemp("tiny-whisper")
    (folder / "vocab.json").write_text(json.dumps({ch: i for i, ch in enumerate(bytes_to_unicode().values())}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=end,
                                 bos_token=end, eos_token=end, pad_token=end)
    specials = ["<|startoftranscript|>", "<|en|>", "<|sv|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in [end] + specials}
    extractor = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           pad_token_id=ids[end], bos_token_id=ids[end], eos_token_id=ids[end],
                           decoder_start_token_id=ids["<|startoftranscript|>"])
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.lang_to_id = {token: ids[token] for token in ("<|en|>", "<|sv|>")}
    generation.task_to_id = {"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]}
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual = True
    generation.begin_suppress_tokens, generation.suppress_tokens = [ids[end]], []
    generation._from_model_config = False  # otherwise loading rebuilds it from config.json and drops the above
    model.save_pretrained(folder)
    return folder


def test_whisper_is_told_swedish_and_to_transcribe(tiny_whisper):
    """Whisper transcribes in the language it is given, so it neither guesses the language nor translates; a
    language Whisper does not know is an error, which shows the argument reaches generate()."""
    from qwen_swe.quality.asr import load_asr, transcribe

    asr = load_asr(tiny_whisper)
    calls = []
    generate = asr.model.generate

    def recording_generate(*args, **kwargs):
        calls.append(kwargs)
        return generate(*args, **kwargs)

    asr.model.generate = recording_generate
    clip = (np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 0.1, 24000)
    texts = transcribe(asr, [clip], language="swedish")
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert calls[0]["language"] == "swedish" and calls[0]["task"] == "transcribe"
    with pytest.raises(ValueError, match="klingon"):
        transcribe(asr, [clip], language="klingon")


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


def test_synth_command_custom_voice_and_its_errors(tiny_custom, tmp_path):
    model = tmp_path / "custom"
    shutil.copytree(tiny_custom, model)
    runner = CliRunner()
    args = ["synth", str(model), "--out", str(tmp_path / "out"), "--text", "Hej på dig!", "--max-new-tokens", "3"]

    no_swedish = runner.invoke(main, args + ["--speaker", "alva"])
    assert no_swedish.exit_code != 0
    assert f"language swedish is not registered in {model / 'config.json'}: run `qwen-swe add-language" \
        in no_swedish.output

    from qwen_swe.language import add_language_to_folder

    add_language_to_folder(model, "swedish")
    unknown = runner.invoke(main, args + ["--speaker", "nils"])
    assert unknown.exit_code != 0 and "speaker nils not in the model: available alva, bertil" in unknown.output

    done = runner.invoke(main, args + ["--speaker", "alva", "--greedy", "--subtalker-greedy", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output[done.output.index("{"):])
    (record,) = summary["files"]
    assert summary["settings"]["do_sample"] is False and summary["settings"]["max_new_tokens"] == 3
    assert record["file"] == "000_alva.wav" and (tmp_path / "out" / record["file"]).is_file()
    assert record["cut"] == (record["frames"] >= 2) and record["eos_reached"] == (not record["cut"])
    assert {"seconds", "rms_dbfs", "peak", "silence_rate"} <= set(record)

    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000010"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("10\n")
    (checkpoint / "trainer_state.json").write_text("{}")
    refused = runner.invoke(main, ["synth", str(checkpoint), "--out", str(tmp_path / "x"), "--speaker", "alva"])
    # a checkpoint goes through the exporter first, which names what a real one needs
    assert refused.exit_code != 0 and "a checkpoint must stay inside its run directory" in refused.output


def test_eval_and_compare_commands_explain_what_is_missing(tmp_path):
    """Refused before any model is loaded, with the option that fixes it."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    runner = CliRunner()
    no_shards = runner.invoke(main, ["eval", str(model), "--out", str(tmp_path / "e")])
    assert no_shards.exit_code != 0 and "the held-out loss needs --shards" in no_shards.output
    bad_layout = runner.invoke(main, ["eval", str(model), "--out", str(tmp_path / "e"), "--layouts", "streamin"])
    assert bad_layout.exit_code != 0 and "streamin: choose from non_streaming" in bad_layout.output
    evaluated = write_eval(tmp_path / "e1", eval_report("a"))
    folder_without_out = runner.invoke(main, ["compare", str(evaluated), str(model)])
    assert folder_without_out.exit_code != 0 and "give --out so compare can evaluate it" in folder_without_out.output
    bad_gate = runner.invoke(main, ["compare", str(evaluated), str(evaluated), "--gates", "loudness"])
    assert bad_gate.exit_code != 0 and "unknown gate(s) loudness" in bad_gate.output


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
