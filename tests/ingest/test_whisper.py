"""ingest/whisper.py for recordings without a transcript. No Whisper weights can be fetched here, so a stand-in
transcriber returns the words of a recording made at test time with their known times: this checks the windows,
the normalisation into sentences and the cutting after the model call, through the ingest command."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.ingest import whisper
from qwen_swe.ingest.features import FRAME_RATE

from qwen_swe.ingest.synthetic import book, make_recording


def test_words_with_times_become_clips_cut_in_pauses(tmp_path, monkeypatch):
    chapters = book()[1:2]
    audio, truth = make_recording(tmp_path / "recording", chapters, name="talk.flac")
    phrases = [p.text for p in chapters[0].phrases]
    calls = []

    def stand_in(samples):
        calls.append(len(samples))
        chunks = []
        for text, (start, end) in zip(phrases, truth.speech):
            words = text.replace("två.", "2.").split()  # Whisper writes digits; --numbers-to-words spells them
            step = (end - start) / len(words)
            chunks += [{"text": " " + word, "timestamp": (start + k * step, start + (k + 1) * step)}
                       for k, word in enumerate(words)]
        return chunks

    monkeypatch.setattr(whisper, "whisper_transcriber", lambda folder: stand_in)
    folder = tmp_path / "kb-whisper"
    folder.mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["ingest", str(out), "--audio", str(audio), "--whisper-model", str(folder),
                                       "--numbers-to-words", "--min-seconds", "1", "--max-seconds", "6",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and abs(calls[0] / 16000 - truth.duration) < 0.05
    clips = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    rejections = [json.loads(line) for line in (out / "rejections.jsonl").read_text(encoding="utf-8").splitlines()]
    assert " ".join(c["text"] for c in clips + rejections if c["start"] is not None).split() == truth.words
    assert clips[0]["text"].startswith("Kapitel två.")  # the digit spelled like a transcript would be
    for clip in clips:
        for edge in (clip["start"], clip["end"]):
            assert not any(a + 0.01 < edge < b - 0.01 for a, b in truth.speech)


def test_windows_end_in_the_longest_pause_near_their_nominal_end(monkeypatch):
    monkeypatch.setattr(whisper, "WINDOW_SECONDS", 10.0)
    monkeypatch.setattr(whisper, "SEARCH_SECONDS", 2.0)
    speech = np.ones(int(25 * FRAME_RATE), bool)
    speech[int(10.5 * FRAME_RATE):int(11.5 * FRAME_RATE)] = False  # the long pause near 10 s
    speech[int(9.0 * FRAME_RATE):int(9.2 * FRAME_RATE)] = False  # a shorter one
    bounds = whisper.windows(25.0, speech)
    assert bounds[0] == (0.0, 11.0) and bounds[-1][1] == 25.0
    assert all(b[1] == c[0] for b, c in zip(bounds, bounds[1:]))
