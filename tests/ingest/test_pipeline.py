"""`qwen-swe ingest` end to end on a recording made at test time (qwen_swe/ingest/synthetic.py): cuts land in the
true pauses, no clip cuts a word, the clip transcripts are the spoken words, a paragraph nobody reads is rejected,
an interrupted run finishes with the same files, and the manifest builds into shards that train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.ingest.pipeline import CRASH_ENV, CRASH_EXIT_CODE

from qwen_swe.ingest.synthetic import book, make_recording, write_text

MAX_SECONDS = 8.0


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The six-chapter book as an mp3 (decoded through PyAV) over a quiet noise floor, its text with a paragraph
    nobody reads, ingested."""
    folder = tmp_path_factory.mktemp("book")
    audio, truth = make_recording(folder / "recording", book(), name="book.mp3", noise_floor=0.01)
    text = write_text(folder / "book.txt", book(wrong_paragraph=True))
    out = folder / "ingested"
    result = CliRunner().invoke(main, ["ingest", str(out), "--audio", str(audio), "--text", str(text),
                                       "--speaker", "berätterskan", "--max-seconds", str(MAX_SECONDS),
                                       "--min-seconds", "1.0", "--no-progress"])
    assert result.exit_code == 0, result.output
    return out, truth, result.output


def test_cuts_fall_in_true_pauses_and_never_inside_a_word(ingested):
    out, truth, _ = ingested
    clips = read_jsonl(out / "manifest.jsonl")
    assert len(clips) >= 8
    cuts = [edge for clip in clips for edge in (clip["start"], clip["end"])]

    def distance_to_pause(t):
        return min(0.0 if a <= t <= b else min(abs(t - a), abs(t - b)) for a, b in truth.gaps())

    near = [distance_to_pause(t) <= 0.1 for t in cuts]
    assert sum(near) >= 0.9 * len(cuts), [(t, distance_to_pause(t)) for t in cuts]
    inside_words = [(t, a, b) for t in cuts for a, b in truth.speech if a + 0.01 < t < b - 0.01]
    assert not inside_words  # every phrase is spoken without a pause: a cut inside one cuts a word
    for clip in clips:
        info = soundfile.info(str(out / clip["audio"]))
        assert info.samplerate == 24000 and info.channels == 1
        assert 1.0 <= info.duration <= MAX_SECONDS
        assert abs(info.duration - (clip["end"] - clip["start"])) < 0.01


def test_clip_transcripts_are_the_spoken_words_and_the_unread_paragraph_is_rejected(ingested):
    out, truth, output = ingested
    clips = read_jsonl(out / "manifest.jsonl")
    rejections = read_jsonl(out / "rejections.jsonl")
    timed = sorted([(c["start"], c["text"]) for c in clips]
                   + [(r["start"], r["text"]) for r in rejections if r["start"] is not None])
    words = " ".join(text for _, text in timed).split()
    assert words == truth.words  # nothing lost, nothing duplicated, in order
    kept = " ".join(c["text"] for c in sorted(clips, key=lambda c: c["start"])).split()
    assert len(kept) >= 0.9 * len(truth.words)
    unread = [r["text"] for r in rejections if r["reason"] == "text_not_in_audio"]
    assert unread == ["Ett mellanspel.", "Denna text finns bara i boken och läses aldrig upp.",
                      "Kungen av Frankrike åt sparris i trädgården varje tisdag."]
    assert all(r["source"].startswith("book:") and r["detail"] for r in rejections)
    # the heading note and the bracketed illustration line are not spoken, and nowhere in the output
    assert not any("Illustration" in c["text"] or "Inläst" in c["text"] for c in clips)
    entry = clips[0]
    assert entry["speaker"] == "berätterskan" and entry["language"] == "swedish"
    assert entry["id"] == "book_00001" and entry["audio"] == "clips/book_00001.flac"
    assert 0.5 <= entry["confidence"] <= 1.0 and set(entry["scores"]) == {"alignment_cost", "speaking_rate",
                                                                          "vad_disagreement"}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["clips"] == len(clips) and report["sentences_not_in_audio"] == 3
    assert report["rejections"]["text_not_in_audio"]["count"] == 3
    assert abs(report["minutes"]["kept"] - sum(c["end"] - c["start"] for c in clips) / 60) < 0.01
    text = (out / "report.md").read_text(encoding="utf-8")
    assert f"{report['clips']} clips" in text and "text_not_in_audio" in text
    assert f"{len(clips)} clips" in output


def test_an_interrupted_run_finishes_with_the_same_files(tmp_path):
    chapters = book()
    recordings = []
    for n, part in enumerate((chapters[:1], chapters[1:2])):
        audio, _ = make_recording(tmp_path / f"part{n}", part, name=f"part{n}.flac")
        text = write_text(tmp_path / f"part{n}.txt", part, heading_notes=False)
        recordings.append({"audio": str(audio), "text": text.name, "speaker": f"reader{n}", "id": f"del{n}"})
    manifest = tmp_path / "recordings.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recordings), encoding="utf-8")
    runner = CliRunner()
    whole = tmp_path / "whole"
    assert runner.invoke(main, ["ingest", str(whole), "--manifest", str(manifest), "--no-progress"]).exit_code == 0
    first_clips = len([c for c in read_jsonl(whole / "manifest.jsonl") if c["recording"] == "del0"])
    broken = tmp_path / "broken"
    crashed = runner.invoke(main, ["ingest", str(broken), "--manifest", str(manifest), "--no-progress"],
                            env={CRASH_ENV: str(first_clips + 1)})
    assert crashed.exit_code == CRASH_EXIT_CODE
    assert (broken / "recordings" / "del0.json").exists() and not (broken / "recordings" / "del1.json").exists()
    assert not (broken / "manifest.jsonl").exists()
    resumed = runner.invoke(main, ["ingest", str(broken), "--manifest", str(manifest), "--no-progress"])
    assert resumed.exit_code == 0 and "del0: already done" in resumed.output
    assert tree_bytes(broken) == tree_bytes(whole)
    assert {c["speaker"] for c in read_jsonl(whole / "manifest.jsonl")} == {"reader0", "reader1"}


def test_the_manifest_builds_into_shards_that_train(ingested, tiny_06b, tmp_path):
    from qwen_swe.train.config import load_config
    from qwen_swe.train.trainer import Trainer

    from ..train.conftest import fresh_accelerate_state_reset

    out, _, _ = ingested
    shards = tmp_path / "shards"
    built = CliRunner().invoke(main, ["shards", "build", str(shards), "--model", str(tiny_06b), "--manifest",
                                      str(out / "manifest.jsonl"), "--samples-per-shard", "8", "--no-progress"])
    assert built.exit_code == 0, built.output
    index = json.loads((shards / "index.json").read_text(encoding="utf-8"))
    assert sum(r["samples"] for r in index["splits"]["train"]) == len(read_jsonl(out / "manifest.jsonl"))
    fresh_accelerate_state_reset()
    run_dir = tmp_path / "run"
    config = load_config(None, "smoke", [f"model.path={tiny_06b}", f"data.shards={shards}",
                                         f"run.output_dir={run_dir}", "run.max_steps=2", "run.eval_every=0",
                                         "run.checkpoint_every=2", "run.tensorboard=false",
                                         "train.freeze=[text_embedding]"])
    try:
        assert Trainer(config).run() == 0
    finally:
        fresh_accelerate_state_reset()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_speech_the_transcript_lacks_is_passed_over_and_reported(tmp_path, monkeypatch):
    from qwen_swe.ingest import align

    monkeypatch.setattr(align, "WINDOW_SLACK_SECONDS", 2.0)  # the preface is longer than a block's usual window
    chapters = book()[:4]
    audio, truth = make_recording(tmp_path / "recording", chapters, name="book.flac")
    text = write_text(tmp_path / "book.txt", chapters[2:], heading_notes=False)  # chapters one and two unlisted
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["ingest", str(out), "--audio", str(audio), "--text", str(text),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["sentences_not_in_audio"] == 0
    preface_speech = sum(b - a for a, b in truth.speech[:16]) / 60  # the 16 phrases of chapters one and two
    assert abs(report["minutes"]["unmatched_speech"] - preface_speech) < 0.1
    clips = read_jsonl(out / "manifest.jsonl")
    assert clips[0]["start"] > truth.speech[15][1] and clips[0]["text"].startswith("Kapitel tre.")
    assert "matched no transcript text" in (out / "report.md").read_text(encoding="utf-8")


def test_a_reverberant_band_limited_recording_still_gives_clean_cuts(tmp_path):
    """A room and a cheap 4 kHz encoder make the audio further from espeak-ng: less is kept, nothing is wrong."""
    chapters = book(wrong_paragraph=True)[:5]  # chapters one to three, with the unread paragraph before three
    audio, truth = make_recording(tmp_path / "recording", chapters, name="room.flac", sox_output=("-r", "22050"),
                                  effects=("reverb", "40", "lowpass", "4000"))
    text = write_text(tmp_path / "room.txt", chapters, heading_notes=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["ingest", str(out), "--audio", str(audio), "--text", str(text),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["kept_share_of_speech"] >= 0.8
    rejections = read_jsonl(out / "rejections.jsonl")
    unread = {"Ett mellanspel.", "Denna text finns bara i boken och läses aldrig upp.",
              "Kungen av Frankrike åt sparris i trädgården varje tisdag."}
    assert unread <= {r["text"] for r in rejections if r["reason"] == "text_not_in_audio"}
    clips = read_jsonl(out / "manifest.jsonl")
    assert not any(unread_text in clip["text"] for clip in clips for unread_text in unread)
    for clip in clips:
        for edge in (clip["start"], clip["end"]):
            assert not any(a + 0.01 < edge < b - 0.01 for a, b in truth.speech)
