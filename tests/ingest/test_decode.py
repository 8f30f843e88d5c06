"""ingest/decode.py: long files decoded as a stream (soundfile blocks or PyAV frames) to 24 kHz mono on disk."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import soxr

from qwen_swe.ingest import decode
from qwen_swe.tiny import calibration_audio


def test_streamed_blocks_equal_one_resampling_and_pyav_formats_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "BLOCK_SECONDS", 0.7)  # many blocks over a short file
    speech = calibration_audio(seed=5, seconds=4.0 * 44100 / 24000)  # 4 s when played at 44.1 kHz
    stereo = np.stack([speech, 0.5 * speech], axis=1)
    flac = tmp_path / "book.flac"
    soundfile.write(str(flac), stereo, 44100)
    count = decode.decode_to_pcm(flac, tmp_path / "flac.pcm", progress=False)
    decoded = np.asarray(decode.open_pcm(tmp_path / "flac.pcm"), np.float32) / 32768.0
    reference = soxr.resample(soundfile.read(str(flac), dtype="float32")[0].mean(axis=1), 44100, 24000,
                              quality="VHQ")
    assert count == len(decoded) == len(reference)
    assert np.abs(decoded - reference).max() < 2e-4  # 16-bit rounding only
    import av

    m4b = tmp_path / "book.m4b"
    with av.open(str(m4b), "w", format="mp4") as container:  # AAC in MP4, as audiobooks (m4b) ship
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(stereo.T.astype(np.float32).copy(), format="fltp", layout="stereo")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    decode.decode_to_pcm(m4b, tmp_path / "m4b.pcm", progress=False)
    from_m4b = np.asarray(decode.open_pcm(tmp_path / "m4b.pcm"), np.float32) / 32768.0
    assert abs(len(from_m4b) - count) < 0.02 * count
    # AAC adds a priming delay: compare at the best lag within 50 ms
    length = min(len(from_m4b), count) - 1200
    best = max(np.corrcoef(from_m4b[lag:lag + length], decoded[:length])[0, 1] for lag in range(0, 1200, 8))
    assert best > 0.9


def test_unreadable_files_name_themselves(tmp_path):
    broken = tmp_path / "broken.m4b"
    broken.write_bytes(b"not audio at all" * 100)
    with pytest.raises(ValueError, match=r"broken\.m4b: cannot decode audio"):
        decode.decode_to_pcm(broken, tmp_path / "x.pcm", progress=False)
    assert not list(tmp_path.glob("*.pcm*"))  # nothing half-written is left
    with pytest.raises(ValueError, match=r"missing\.mp3: no such file"):
        decode.decode_to_pcm(tmp_path / "missing.mp3", tmp_path / "y.pcm", progress=False)
