"""ingest/ctc.py: the open-begin/open-end CTC Viterbi finds tokens where the emissions put them; a tiny random
wav2vec2 folder (made here; no weights can be downloaded) runs through emissions and the ingest command. A real
Swedish CTC model's accuracy cannot be measured here: none is available offline."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.ingest.ctc import spell, viterbi

from qwen_swe.ingest.synthetic import book, make_recording, write_text

VOCABULARY = ["<pad>", "|"] + list("abcdefghijklmnopqrstuvwxyzåäö")


def test_viterbi_recovers_the_frames_the_emissions_favour():
    vocabulary = {c: i for i, c in enumerate(VOCABULARY)}
    tokens, owners = spell(["Hej,", "då!"], vocabulary)
    assert [VOCABULARY[t] for t in tokens] == list("hej|då") and owners == [0, 0, 0, -1, 1, 1]
    frames = 60
    log_probs = np.full((frames, len(VOCABULARY)), np.log(0.01), np.float32)
    log_probs[:, 0] = np.log(0.9)  # mostly blank
    truth = [20, 23, 26, 29, 33, 37]  # noise before frame 20 and after 37: open begin and end
    for frame, token in zip(truth, tokens):
        log_probs[frame] = np.log(0.01)
        log_probs[frame, token] = np.log(0.95)
    found, scores, end = viterbi(log_probs, tokens, blank=0)
    assert found.tolist() == truth and end >= 37
    assert np.allclose(scores, np.log(0.95))


def tiny_wav2vec2(folder):
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(VOCABULARY)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), pad_token="<pad>", word_delimiter_token="|",
                                     unk_token="<pad>")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    config = Wav2Vec2Config(vocab_size=len(VOCABULARY), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(16, 16, 16, 16, 16, 16, 16),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
                            do_stable_layer_norm=True)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def test_a_ctc_model_folder_runs_through_the_ingest_command(tmp_path):
    chapters = book()[1:2]
    audio, _ = make_recording(tmp_path / "recording", chapters, name="chapter.wav", sox_output=())
    text = write_text(tmp_path / "chapter.txt", chapters, heading_notes=False)
    model = tiny_wav2vec2(tmp_path / "wav2vec2")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["ingest", str(out), "--audio", str(audio), "--text", str(text),
                                       "--ctc-model", str(model), "--no-progress"])
    assert result.exit_code == 0, result.output
    # random weights align nothing well; what holds for any model: every sentence is accounted for once
    clips = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    rejections = [json.loads(line) for line in (out / "rejections.jsonl").read_text(encoding="utf-8").splitlines()]
    words = " ".join(entry["text"] for entry in clips + rejections).split()
    assert sorted(words) == sorted(" ".join(p.text for p in chapters[0].phrases).split())
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["settings"]["aligner"] == "ctc"


def test_the_block_loop_places_every_sentence_and_rejects_the_unread_paragraph(monkeypatch):
    """Emissions that a perfect CTC model would give for the test book (each phrase's letters spread over its
    speech, blank elsewhere) must come back as the phrases' times, with the unread paragraph rejected."""
    from types import SimpleNamespace

    from qwen_swe.ingest import ctc
    from qwen_swe.ingest.synthetic import Truth
    from qwen_swe.ingest.transcript import split_sentences

    vocabulary = {c: i for i, c in enumerate(VOCABULARY)}
    chapters = book(wrong_paragraph=True)
    spoken = [p for chapter in chapters if chapter.spoken for p in chapter.phrases]
    truth, rate, t = Truth(), 50.0, 1.0
    for phrase in spoken:  # 12 letters a second, then the phrase's pause
        letters = len(spell(phrase.text.split(), vocabulary)[0])
        truth.speech.append((t, t + letters / 12))
        t += letters / 12 + phrase.pause_after
    log_probs = np.full((int(t * rate) + 50, len(VOCABULARY)), np.log(0.002), np.float32)
    log_probs[:, 0] = np.log(0.95)
    for phrase, (start, end) in zip(spoken, truth.speech):
        tokens = spell(phrase.text.split(), vocabulary)[0]
        for k, token in enumerate(tokens):
            frame = int((start + (end - start) * (k + 0.5) / len(tokens)) * rate)
            log_probs[frame] = np.log(0.002)
            log_probs[frame, token] = np.log(0.9)
    monkeypatch.setattr(ctc, "emissions", lambda audio, processor, model: (log_probs, rate))
    fake = (SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: vocabulary, pad_token_id=0)),
            SimpleNamespace(config=SimpleNamespace(pad_token_id=0)))
    lines = []
    for chapter in chapters:
        lines += [" ".join(p.text for p in chapter.phrases), ""]
    sentences = split_sentences("\n".join(lines))
    results = ctc.align_with_ctc(sentences, None, "unused", np.zeros(0, bool), loaded=fake)
    rejected = [r.sentence.text for r in results if r.status != "aligned"]
    assert rejected == ["Ett mellanspel.", "Denna text finns bara i boken och läses aldrig upp.",
                        "Kungen av Frankrike åt sparris i trädgården varje tisdag."]
    words = [w for r in results for w in r.words]
    assert [w.text for w in words] == [w for p in spoken for w in p.text.split()]
    phrase_of_word = [k for k, p in enumerate(spoken) for _ in p.text.split()]
    for word, k in zip(words, phrase_of_word):
        start, end = truth.speech[k]
        assert start - 0.05 <= word.start < word.end <= end + 0.05
