"""Benchmark `qwen-swe ingest` on a long recording with known pauses; prints one JSON object.

The six-chapter book of qwen_swe/ingest/synthetic.py (six espeak-ng voices, speeds 130-195 words a minute, music and
silence between chapters, a quiet noise floor) is read --copies times in a row into one mp3, with a paragraph in the
text that nobody reads in every copy, and ingested with the default settings in this process. Reported: seconds of
work per minute of audio (the aligner is designed to grow linearly with the recording, so this should not grow with
--copies), peak resident memory, the share of cuts within 100 ms of a true pause (0 when inside one), cuts inside
speech (a cut word), whether the clip and rejection transcripts give back exactly the spoken words, and how many
transcript sentences were found missing (3 per copy is right).

Usage: .venv/bin/python tools/bench_ingest.py [--copies N] [--noise-floor A]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_swe.ingest.pipeline import IngestSettings, Recording, ingest  # noqa: E402
from qwen_swe.ingest.synthetic import book, make_recording, write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--noise-floor", type=float, default=0.01)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        audio, truth = make_recording(folder / "recording", book() * args.copies, name="book.mp3",
                                      noise_floor=args.noise_floor)
        text = write_text(folder / "book.txt", book(wrong_paragraph=True) * args.copies, heading_notes=False)
        started = time.perf_counter()
        report = ingest(folder / "out", [Recording("book", str(audio), str(text), "reader")], IngestSettings(),
                        progress=False, say=lambda _: None)
        seconds = time.perf_counter() - started
        clips = [json.loads(line) for line in (folder / "out" / "manifest.jsonl").read_text().splitlines()]
        rejections = [json.loads(line) for line in (folder / "out" / "rejections.jsonl").read_text().splitlines()]
    cuts = [edge for clip in clips for edge in (clip["start"], clip["end"])]

    def distance(t: float) -> float:
        return min(0.0 if a <= t <= b else min(abs(t - a), abs(t - b)) for a, b in truth.gaps())

    timed = sorted([(c["start"], c["text"]) for c in clips] + [(r["start"], r["text"]) for r in rejections
                                                                if r["start"] is not None])
    minutes = truth.duration / 60
    print(json.dumps({
        "audio_minutes": round(minutes, 2), "seconds": round(seconds, 1),
        "seconds_per_audio_minute": round(seconds / minutes, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "clips": len(clips), "cuts": len(cuts),
        "cuts_within_100ms": round(sum(distance(t) <= 0.1 for t in cuts) / max(len(cuts), 1), 4),
        "cuts_inside_speech": sum(any(a + 0.01 < t < b - 0.01 for a, b in truth.speech) for t in cuts),
        "words_given_back_exactly": " ".join(text for _, text in timed).split() == truth.words,
        "kept_share_of_speech": report["kept_share_of_speech"],
        "sentences_not_in_audio": report["sentences_not_in_audio"],
        "rejections": {reason: entry["count"] for reason, entry in report["rejections"].items()},
    }))


if __name__ == "__main__":
    main()
