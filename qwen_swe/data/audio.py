"""Audio in: decode any soundfile format, fold to mono, resample to the codec's 24 kHz with soxr (high quality)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model_shapes import SAMPLE_RATE


@dataclass
class Audio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    original_rate: int
    original_channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def band_limited(self) -> bool:
        """True when the source could not carry the full 12 kHz band that 24 kHz audio has."""
        return self.original_rate < SAMPLE_RATE


def load_audio(path: str | Path) -> Audio:
    """Read a file (wav/flac/ogg/mp3 through libsndfile) as 24 kHz mono float32; raise ValueError naming the file."""
    import soundfile
    import soxr

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises its own error types
        raise ValueError(f"{path}: cannot decode audio ({error})") from error
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no audio samples")
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ")
    return Audio(samples=np.ascontiguousarray(mono, dtype=np.float32), original_rate=int(rate),
                 original_channels=int(data.shape[1]))
