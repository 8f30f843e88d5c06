"""`qwen-swe ingest`: long recordings (audiobooks, speeches) and their transcripts -> aligned clips + manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command("ingest", context_settings={"max_content_width": 110})
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--audio", type=click.Path(exists=True, dir_okay=False),
              help="One long recording: m4b/m4a/mp3/ogg/opus/flac/wav (decoded as a stream, 24 kHz mono).")
@click.option("--text", type=click.Path(exists=True, dir_okay=False),
              help="Its transcript (UTF-8). Lines starting with # and [bracketed] or {braced} text are not spoken; "
                   "a blank line ends a paragraph; a line without closing punctuation (a heading) is a sentence.")
@click.option("--manifest", "recordings_manifest", type=click.Path(exists=True, dir_okay=False),
              help="Many recordings: JSONL with audio, text (a transcript file), optional speaker and id per line, "
                   "paths relative to the file. Instead of --audio/--text.")
@click.option("--speaker", default=None, help="Speaker of the recording(s) (default: the recording's id; a "
              "manifest line's speaker wins).")
@click.option("--id", "recording_name", default=None, help="Recording id for --audio (default: the file's stem); "
              "clips are named ID_00001.flac ...")
@click.option("--language", default="swedish", show_default=True, help="Language written into the manifest.")
@click.option("--min-seconds", type=float, default=2.0, show_default=True,
              help="A shorter stretch is merged with a neighbour, or rejected (too_short) when it cannot be.")
@click.option("--max-seconds", type=float, default=15.0, show_default=True,
              help="No clip is longer; a stretch with no pause to cut inside is rejected (no_pause_to_cut).")
@click.option("--min-pause", type=float, default=0.15, show_default=True,
              help="Shortest silence (s) that counts as a pause to cut in.")
@click.option("--pad", type=float, default=0.15, show_default=True,
              help="Silence kept before and after a clip's speech (s).")
@click.option("--max-inner-pause", type=float, default=2.0, show_default=True,
              help="A longer pause (chapter break, music) always ends a clip.")
@click.option("--min-confidence", type=float, default=0.5, show_default=True,
              help="Clips below go to rejections.jsonl with the reason (alignment_cost, speaking_rate, "
                   "vad_disagreement).")
@click.option("--max-cost-ratio", type=float, default=1.6, show_default=True,
              help="A sentence matching the audio worse than this multiple of the recording's median is taken for "
                   "text the audio does not hold (text_not_in_audio).")
@click.option("--numbers-to-words/--keep-numbers", default=False, show_default=True,
              help="Spell digits as Swedish words, as `shards build --numbers-to-words` does.")
@click.option("--voice", default="sv", show_default=True, help="espeak-ng voice the offline aligner renders with.")
@click.option("--ctc-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="A wav2vec2-style CTC model folder (e.g. a Swedish wav2vec2): forced alignment with it instead "
                   "of espeak-ng + DTW.")
@click.option("--whisper-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="A Whisper model folder (e.g. kb-whisper): transcribes recordings that have no transcript, with "
                   "word timestamps.")
@click.option("--no-vad", is_flag=True, help="Find pauses by level alone (no silero-vad).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def ingest_cmd(out: str, audio: Optional[str], text: Optional[str], recordings_manifest: Optional[str],
               speaker: Optional[str], recording_name: Optional[str], language: str, min_seconds: float,
               max_seconds: float, min_pause: float, pad: float, max_inner_pause: float, min_confidence: float,
               max_cost_ratio: float, numbers_to_words: bool, voice: str, ctc_model: Optional[str],
               whisper_model: Optional[str], no_vad: bool, progress: bool) -> None:
    """Cut long recordings into aligned clips: OUT/clips/*.flac, OUT/manifest.jsonl (what `qwen-swe shards build
    --manifest` takes), OUT/rejections.jsonl and OUT/report.md.

    \b
    Offline by default: the transcript is rendered with espeak-ng and aligned to the audio by DTW on MFCCs; cuts
    fall only inside pauses (level + silero-vad), never mid-word. A finished recording is skipped on a rerun, so an
    interrupted run continues where it stopped and ends with the same files.

    \b
      qwen-swe ingest data/book --audio book.m4b --text book.txt --speaker reader1
      qwen-swe ingest data/books --manifest recordings.jsonl       # {"audio": ..., "text": ..., "speaker": ...}
      qwen-swe ingest data/talks --audio talk.mp3 --whisper-model models/kb-whisper-small
      qwen-swe shards build data/shards --model MODEL --manifest data/book/manifest.jsonl
    """
    from ..ingest.pipeline import IngestSettings, Recording, ingest, read_recordings_manifest, recording_id
    from ..ingest.segment import SegmentSettings

    if bool(audio) == bool(recordings_manifest):
        raise click.UsageError("give either --audio (with --text) or --manifest")
    if recordings_manifest and (text or recording_name):
        raise click.UsageError("--text and --id go with --audio; a manifest names them per line")
    if not 0 < min_seconds < max_seconds:
        raise click.UsageError(f"--min-seconds {min_seconds} / --max-seconds {max_seconds}: need 0 < min < max")
    if ctc_model and whisper_model and text:
        raise click.UsageError("--ctc-model aligns a transcript and --whisper-model makes one: choose one")
    aligner = "ctc" if ctc_model else "whisper" if (whisper_model and not text and not recordings_manifest) \
        else "espeak"
    settings = IngestSettings(
        segment=SegmentSettings(min_seconds=min_seconds, max_seconds=max_seconds, pad=pad,
                                min_confidence=min_confidence, max_cost_ratio=max_cost_ratio,
                                max_inner_pause=max_inner_pause),
        min_pause=min_pause, language=language, numbers_to_words=numbers_to_words, voice=voice, aligner=aligner,
        ctc_model=ctc_model, whisper_model=whisper_model, use_vad=not no_vad)
    try:
        if recordings_manifest:
            recordings = read_recordings_manifest(Path(recordings_manifest), speaker)
        else:
            assert audio is not None
            rec_id = recording_id(recording_name or Path(audio).stem, set())
            recordings = [Recording(id=rec_id, audio=audio, text=text, speaker=speaker or rec_id)]
        report = ingest(Path(out), recordings, settings, progress=progress, say=click.echo)
    except ValueError as error:  # IngestError, undecodable audio, unloadable model folders: all name the file
        raise click.ClickException(str(error)) from error
    minutes = report["minutes"]
    click.echo(f"{report['clips']} clips, {minutes['kept']:.1f} of {minutes['total']:.1f} min kept -> "
               f"{Path(out) / 'manifest.jsonl'}; why the rest was not: {Path(out) / 'report.md'}")


COMMANDS = (ingest_cmd,)
