"""Where a recording speaks and where it pauses, at 50 frames a second.

Two detectors vote:
- level: a frame is loud when its RMS level is above a threshold set from the recording itself, between its noise
  floor (10th percentile of frame levels) and its speech level (95th percentile): floor + 35% of the distance, but
  never more than 40 dB below the speech level. Precise at the edges of words, fooled by music and noise;
- silero-vad (its weights ship inside the package, so it runs offline): a neural voice-activity detector that tells
  speech from music and noise, but moves its edges by tens of milliseconds. It runs on 16 kHz audio in blocks of
  ten minutes, so memory stays flat however long the recording is.

A frame is speech when both say so (with the VAD's segments widened by 100 ms, so its blurred edges never cut into
a word the level detector hears). A pause is a run of non-speech frames at least `min_pause` long; cuts are made
only inside pauses. With `--no-vad` the level detector decides alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .features import FRAME_RATE

VAD_RATE = 16000
VAD_BLOCK_SECONDS = 600.0
VAD_WIDEN_SECONDS = 0.1


@dataclass(frozen=True)
class Pause:
    start: float  # seconds
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def loud_frames(levels: np.ndarray) -> np.ndarray:
    if levels.size == 0:
        return np.zeros(0, bool)
    floor = float(np.percentile(levels, 10))
    speech = float(np.percentile(levels, 95))
    threshold = max(floor + 0.35 * (speech - floor), speech - 40.0)
    return levels > threshold


def vad_frames(samples: np.ndarray, rate: int, frames: int, progress: Optional[object] = None) -> np.ndarray:
    """Silero VAD speech per frame (widened by VAD_WIDEN_SECONDS each side)."""
    import soxr
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad()
    speech = np.zeros(frames, bool)
    block = int(VAD_BLOCK_SECONDS * rate)
    widen = int(round(VAD_WIDEN_SECONDS * FRAME_RATE))
    with torch.inference_mode():
        for begin in range(0, len(samples), block):
            piece = np.asarray(samples[begin:begin + block], dtype=np.float32)
            resampled = soxr.resample(piece, rate, VAD_RATE, quality="HQ")
            model.reset_states()
            stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(resampled)), model,
                                           sampling_rate=VAD_RATE, min_silence_duration_ms=100,
                                           min_speech_duration_ms=100, speech_pad_ms=30)
            offset = begin / rate
            for stamp in stamps:
                first = int((offset + stamp["start"] / VAD_RATE) * FRAME_RATE) - widen
                last = int(np.ceil((offset + stamp["end"] / VAD_RATE) * FRAME_RATE)) + widen
                speech[max(0, first):min(frames, last)] = True
            if progress is not None:
                progress.update(len(piece) / rate)  # type: ignore[attr-defined]
    return speech


def pauses_of(speech: np.ndarray, min_pause: float) -> list[Pause]:
    """Runs of non-speech frames at least `min_pause` seconds long; the recording's ends count as pauses."""
    pauses = []
    padded = np.concatenate([[True], speech, [True]]).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    for first, last in zip(changes[::2], changes[1::2]):  # non-speech runs [first, last)
        start, end = first / FRAME_RATE, last / FRAME_RATE
        if end - start >= min_pause or first == 0 or last == len(speech):
            pauses.append(Pause(start, end))
    return pauses
