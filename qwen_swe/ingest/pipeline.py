"""`qwen-swe ingest`: long recordings and their transcripts in, aligned clips, a manifest and a report out.

Per recording: decode (decode.py) -> levels, MFCCs and VAD (features.py, pauses.py) -> the transcript's sentences
(transcript.py) -> word times (align.py, or ctc.py with a CTC model folder, or whisper.py with no transcript) ->
clips and rejections (segment.py) -> clips/*.flac and recordings/ID.json. The per-recording JSON is written last
and atomically: it is the mark of a finished recording, which a rerun skips when its settings and inputs are the
same. An interrupted recording is redone from the start (its clips are rewritten byte for byte), then
manifest.jsonl, rejections.jsonl, report.json and report.md are rebuilt from every recording's JSON, so a rerun after
an interruption leaves exactly what an uninterrupted run leaves. A recording left out of a later run keeps its files
in clips/ and recordings/ but is not in the rebuilt manifest.

Output layout (what `qwen-swe shards build --manifest OUT/manifest.jsonl` takes as is):
    OUT/clips/ID_00001.flac         24 kHz mono 16-bit FLAC
    OUT/manifest.jsonl              audio (relative), text, speaker, language, id, and metadata: recording, start,
                                    end, confidence, scores
    OUT/rejections.jsonl            source, key, reason, detail (as `shards build` writes them), recording, start,
                                    end, text
    OUT/report.json, OUT/report.md  minutes kept and why the rest was not
    OUT/recordings/ID.json          one finished recording (resume mark)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..files import write_bytes_atomic, write_json_atomic, write_text_atomic
from ..model_shapes import SAMPLE_RATE
from ..data.build import REJECTIONS_NAME, rejection
from .segment import Clip, SegmentSettings

MANIFEST_NAME = "manifest.jsonl"
CLIPS_DIR = "clips"
RECORDINGS_DIR = "recordings"
WORK_DIR = ".work"
CRASH_ENV = "QWEN_SWE_INGEST_CRASH_AFTER_CLIPS"  # tests of resume: exit with code 3 after K clips
CRASH_EXIT_CODE = 3
ALIGNERS = ("espeak", "ctc", "whisper")


@dataclass(frozen=True)
class Recording:
    id: str
    audio: str
    text: Optional[str]  # None: transcribe (whisper)
    speaker: str


@dataclass(frozen=True)
class IngestSettings:
    segment: SegmentSettings = SegmentSettings()
    min_pause: float = 0.15
    language: str = "swedish"
    numbers_to_words: bool = False
    voice: str = "sv"
    aligner: str = "espeak"
    ctc_model: Optional[str] = None
    whisper_model: Optional[str] = None
    use_vad: bool = True

    def __post_init__(self) -> None:
        if self.aligner not in ALIGNERS:
            raise IngestError(f"unknown aligner {self.aligner!r}; choose from {', '.join(ALIGNERS)}")
        if self.aligner == "ctc" and not self.ctc_model:
            raise IngestError("the ctc aligner needs --ctc-model")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class IngestError(ValueError):
    """A mistake the user can fix (a missing file, a bad manifest line, contradicting options)."""


@dataclass
class RecordingOutcome:
    recording: Recording
    skipped: bool
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- recordings


def recording_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "recording"
    candidate, number = base, 2
    while candidate in taken:
        candidate, number = f"{base}-{number}", number + 1
    taken.add(candidate)
    return candidate


def read_recordings_manifest(path: Path, default_speaker: Optional[str]) -> list[Recording]:
    """JSONL, one recording a line: audio, text (a transcript file; omit it to transcribe), optional speaker, id.
    Paths are relative to the manifest."""
    recordings, taken = [], set()
    for number, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise IngestError(f"{path}:{number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict) or not isinstance(record.get("audio"), str):
            raise IngestError(f"{path}:{number}: needs a string field 'audio' (and 'text', a transcript file)")
        audio = _resolve(path.parent, record["audio"])
        text = _resolve(path.parent, record["text"]) if isinstance(record.get("text"), str) else None
        name = str(record.get("id") or Path(record["audio"]).stem)
        rec_id = recording_id(name, taken)
        speaker = str(record.get("speaker") or default_speaker or rec_id)
        recordings.append(Recording(id=rec_id, audio=str(audio), text=str(text) if text else None, speaker=speaker))
    if not recordings:
        raise IngestError(f"{path}: no recordings listed")
    return recordings


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def check_recordings(recordings: list[Recording], settings: IngestSettings) -> None:
    for recording in recordings:
        if not Path(recording.audio).is_file():
            raise IngestError(f"{recording.audio}: no such audio file (recording {recording.id})")
        if recording.text is None:
            if settings.whisper_model is None:
                raise IngestError(f"recording {recording.id} has no transcript: give one (--text or 'text' in the "
                                  "manifest), or --whisper-model to transcribe it")
        elif not Path(recording.text).is_file():
            raise IngestError(f"{recording.text}: no such transcript file (recording {recording.id})")
        else:  # a transcript that cannot be read is found before hours of decoding, not after
            from .transcript import read_transcript

            try:
                read_transcript(recording.text, numbers_to_words=settings.numbers_to_words)
            except ValueError as error:
                raise IngestError(str(error)) from error


# ------------------------------------------------------------------------------------------------ running


def fingerprint_of(recording: Recording, settings: IngestSettings) -> str:
    audio = Path(recording.audio)
    identity = {"recording": asdict(recording), "settings": settings.describe(),
                "audio_bytes": audio.stat().st_size,
                "text_sha256": hashlib.sha256(Path(recording.text).read_bytes()).hexdigest() if recording.text else None}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def ingest(out: Path, recordings: list[Recording], settings: IngestSettings, progress: bool = True,
           say: Callable[[str], None] = print) -> dict[str, Any]:
    """Ingest every recording (skipping finished ones), then write manifest, rejections and report; the report."""
    from .report import build_report, render_report

    check_recordings(recordings, settings)
    out.mkdir(parents=True, exist_ok=True)
    crash = _CrashSwitch()
    records = []  # every recording's record, finished now or before
    for recording in recordings:
        record_path = out / RECORDINGS_DIR / f"{recording.id}.json"
        fingerprint = fingerprint_of(recording, settings)
        if record_path.exists():
            previous = json.loads(record_path.read_text(encoding="utf-8"))
            if previous.get("fingerprint") == fingerprint:
                say(f"{recording.id}: already done ({len(previous['clips'])} clips); skipped")
                records.append(previous)
                continue
        record = ingest_recording(out, recording, settings, progress, crash, fingerprint)
        record["fingerprint"] = fingerprint
        write_json_atomic(record_path, record)
        records.append(record)
        stats = record["stats"]
        say(f"{recording.id}: {len(record['clips'])} clips, {stats['kept_seconds'] / 60:.1f} of "
            f"{stats['duration_seconds'] / 60:.1f} min kept, {len(record['rejections'])} rejections")
    def jsonl(part: str) -> str:
        return "".join(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
                       for record in records for entry in record[part])

    write_text_atomic(out / MANIFEST_NAME, jsonl("clips"))
    write_text_atomic(out / REJECTIONS_NAME, jsonl("rejections"))
    report = build_report(records, settings)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_report(report))
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return report


def ingest_recording(out: Path, recording: Recording, settings: IngestSettings, progress: bool,
                     crash: "_CrashSwitch", fingerprint: str) -> dict[str, Any]:
    from .align import WARPS, align_recording
    from .decode import FloatView, decode_to_pcm, open_pcm
    from .features import FRAME_RATE, level_db, mfcc
    from .pauses import loud_frames, pauses_of, vad_frames
    from .segment import score_clips, segment
    from .transcript import read_transcript

    for stale in sorted((out / CLIPS_DIR).glob(f"{recording.id}_*.flac")):
        stale.unlink()  # clips of an earlier, unfinished or differently set run of this recording
    # named by the inputs' fingerprint: a decode left by an interrupted run is reused only for the same inputs
    pcm_path = out / WORK_DIR / f"{recording.id}-{fingerprint[:16]}.pcm"
    if not pcm_path.exists():
        decode_to_pcm(Path(recording.audio), pcm_path, progress=progress)
    audio = FloatView(open_pcm(pcm_path))
    duration = len(audio) / SAMPLE_RATE
    levels = level_db(audio, SAMPLE_RATE)
    loud = loud_frames(levels)
    if settings.use_vad:
        with _bar(duration, f"{recording.id}: voice activity", "s", progress) as bar:
            vad = vad_frames(audio, SAMPLE_RATE, len(levels), progress=bar)
    else:
        vad = np.ones(len(levels), bool)
    speech = loud & vad
    pauses = pauses_of(speech, settings.min_pause)
    if settings.aligner == "whisper" or recording.text is None:
        from .whisper import transcribe_and_time

        results = transcribe_and_time(audio, settings.whisper_model, speech, settings.numbers_to_words)
        sentences_rejected = []
    else:
        try:
            sentences = read_transcript(recording.text, numbers_to_words=settings.numbers_to_words)
        except ValueError as error:
            raise IngestError(str(error)) from error
        if settings.aligner == "ctc":
            from .ctc import align_with_ctc

            results = align_with_ctc(sentences, audio, settings.ctc_model, speech,
                                     max_cost_ratio=settings.segment.max_cost_ratio)
        else:
            features = mfcc(audio, SAMPLE_RATE, WARPS)
            with _bar(len(sentences), f"{recording.id}: aligning", "sentence", progress) as bar:
                results = align_recording(sentences, features, speech, voice=settings.voice,
                                          max_cost_ratio=settings.segment.max_cost_ratio, progress=bar.update)
        sentences_rejected = [r for r in results if r.status != "aligned"]
    clips = segment(results, pauses, duration, settings.segment)
    score_clips(clips, results, vad, settings.segment)
    kept = [clip for clip in clips if clip.reason is None]
    entries = []
    for number, clip in enumerate(kept, start=1):
        clip_id = f"{recording.id}_{number:05d}"
        path = out / CLIPS_DIR / f"{clip_id}.flac"
        write_bytes_atomic(path, flac_bytes(audio, clip.start, clip.end))
        entries.append(manifest_entry(clip, clip_id, recording, settings))
        crash.clip_done()
    rejections = [rejection_entry(recording, f"sentence {r.sentence.index + 1}", r.status,
                                  f"{recording.text}: sentence {r.sentence.index + 1} (paragraph "
                                  f"{r.sentence.paragraph + 1}) matches no stretch of the audio (mean distance "
                                  f"{r.cost:.2f}); it was left out of the alignment", r.sentence.text, None, None)
                  for r in sentences_rejected]
    rejections += [rejection_entry(recording, f"{clip.start:.2f}-{clip.end:.2f}", clip.reason or "",
                                   f"{recording.audio} {clip.start:.2f}-{clip.end:.2f} s: {clip.detail}", clip.text,
                                   clip.start, clip.end, clip.confidence if clip.scores else None)
                   for clip in clips if clip.reason is not None]
    stats = {
        "duration_seconds": round(duration, 3),
        "speech_seconds": round(float(speech.sum()) / FRAME_RATE, 3),
        "kept_seconds": round(sum(clip.seconds for clip in kept), 3),
        "kept_speech_seconds": round(_speech_inside(speech, kept), 3),
        "rejected_speech_seconds": round(_speech_inside(speech, [c for c in clips if c.reason]), 3),
        "sentences": len(results),
        "sentences_not_in_audio": len(sentences_rejected),
        "words": sum(len(r.sentence.words) for r in results),
    }
    stats["unmatched_speech_seconds"] = round(max(0.0, stats["speech_seconds"] - stats["kept_speech_seconds"]
                                                  - stats["rejected_speech_seconds"]), 3)
    pcm_path.unlink(missing_ok=True)
    return {"recording": asdict(recording), "clips": entries, "rejections": rejections, "stats": stats}


def _speech_inside(speech: np.ndarray, clips: list[Clip]) -> float:
    from .features import FRAME_RATE

    covered = np.zeros(len(speech), bool)
    for clip in clips:
        covered[int(clip.start * FRAME_RATE):int(np.ceil(clip.end * FRAME_RATE))] = True
    return float((covered & speech).sum()) / FRAME_RATE


def manifest_entry(clip: Clip, clip_id: str, recording: Recording, settings: IngestSettings) -> dict[str, Any]:
    return {"audio": f"{CLIPS_DIR}/{clip_id}.flac", "id": clip_id, "text": clip.text, "speaker": recording.speaker,
            "language": settings.language, "recording": recording.id, "start": round(clip.start, 3),
            "end": round(clip.end, 3), "confidence": clip.confidence, "scores": clip.scores}


def rejection_entry(recording: Recording, where: str, reason: str, detail: str, text: str,
                    start: Optional[float], end: Optional[float],
                    confidence: Optional[float] = None) -> dict[str, Any]:
    entry = {**rejection(f"{recording.id}:{where}", None, reason, detail), "recording": recording.id, "text": text,
             "start": None if start is None else round(start, 3), "end": None if end is None else round(end, 3),
             "seconds": None if start is None or end is None else round(end - start, 3)}
    if confidence is not None:
        entry["confidence"] = confidence
    return entry


def flac_bytes(audio: Any, start: float, end: float) -> bytes:
    import soundfile

    first, last = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
    samples = audio.pcm[first:last]
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(samples, dtype=np.int16), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


class _CrashSwitch:
    def __init__(self) -> None:
        value = os.environ.get(CRASH_ENV, "")
        self.remaining = int(value) if value.strip() else None

    def clip_done(self) -> None:
        if self.remaining is None:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            raise SystemExit(CRASH_EXIT_CODE)


class _NoBar:
    def update(self, count: float) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _bar(total: float, label: str, unit: str, enabled: bool):
    """A progress bar with the ETA (tqdm), or nothing."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=round(total, 1), desc=label, unit=unit, leave=False,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}]")
