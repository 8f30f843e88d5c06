"""Level and silence statistics of a synthesised waveform (float samples, full scale = 1.0)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

SILENCE_WINDOW_SECONDS = 0.02  # 20 ms: short enough to see pauses between words, long enough to average a period
DEFAULT_SILENCE_DBFS = -40.0
FLOOR_DBFS = -120.0  # what digital silence reports instead of -inf, so JSON stays valid


def dbfs(value: float) -> float:
    return max(FLOOR_DBFS, 20.0 * math.log10(value)) if value > 0 else FLOOR_DBFS


@dataclass
class AudioStats:
    seconds: float
    rms_dbfs: float
    peak: float  # largest absolute sample (1.0 = full scale)
    peak_dbfs: float
    silence_rate: float  # share of 20 ms windows quieter than the silence threshold

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def silence_rate(wav: np.ndarray, sample_rate: int, threshold_dbfs: float = DEFAULT_SILENCE_DBFS) -> float:
    """Share of non-overlapping 20 ms windows whose RMS level is below `threshold_dbfs` (a partial last window
    counts as a window). An empty waveform is all silence."""
    window = max(1, int(round(SILENCE_WINDOW_SECONDS * sample_rate)))
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    if wav.size == 0:
        return 1.0
    padded = np.zeros(math.ceil(wav.size / window) * window)
    padded[:wav.size] = wav
    rms = np.sqrt(np.mean(padded.reshape(-1, window) ** 2, axis=1))
    threshold = 10.0 ** (threshold_dbfs / 20.0)
    return float(np.mean(rms < threshold))


def audio_stats(wav: np.ndarray, sample_rate: int, silence_dbfs: float = DEFAULT_SILENCE_DBFS) -> AudioStats:
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    rms = float(np.sqrt(np.mean(wav ** 2))) if wav.size else 0.0
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return AudioStats(seconds=wav.size / sample_rate, rms_dbfs=dbfs(rms), peak=peak, peak_dbfs=dbfs(peak),
                      silence_rate=silence_rate(wav, sample_rate, silence_dbfs))
