"""quality/audio_stats.py: duration, peak, level and silence rate of known signals."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_swe.quality.audio_stats import audio_stats


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
