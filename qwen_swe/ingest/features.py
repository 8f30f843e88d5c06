"""Frame-level views of audio that alignment and cutting share: 50 frames a second (20 ms hop).

- `mfcc`: 8 mel-cepstral coefficients (c0, the loudness, left out) on a mel scale up to 8 kHz, so a 22.05 kHz
  espeak-ng rendering and a 24 kHz recording are measured the same way; computed block by block, so hours of
  audio never need one big STFT.
- `level_db`: RMS level per frame in dBFS.
- `standardise`: per-coefficient mean and variance (cepstral mean and variance normalisation), which takes out
  most of the difference between a voice, a microphone and espeak-ng; `standardise_sliding` does it over a moving
  window, so a recording whose reader or room changes (a LibriVox collection) is normalised locally.
"""

from __future__ import annotations

import numpy as np

FRAME_RATE = 50  # frames per second
N_MFCC = 8  # the spectral envelope only: more coefficients start to see the voice (pitch harmonics)
BLOCK_SECONDS = 300.0  # features of long audio are computed in blocks this long


def hop_of(rate: int) -> int:
    return int(round(rate / FRAME_RATE))


def frame_count(samples: int, rate: int) -> int:
    return -(-samples // hop_of(rate))


def mfcc(samples: np.ndarray, rate: int, warps: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """[len(warps), frames, N_MFCC] float32, frame t centred on t / FRAME_RATE seconds.

    A warp w measures the audio with a mel filterbank stretched by w (60*w .. 8000*w Hz): a voice whose formants
    sit w times higher than espeak-ng's then looks like espeak-ng (vocal tract length normalisation). One STFT per
    block serves every warp.
    """
    hop = hop_of(rate)
    frames = frame_count(len(samples), rate)
    block = int(BLOCK_SECONDS * FRAME_RATE) * hop
    context = 2048  # samples either side of a block, so block edges see the same windows as one long STFT would
    out = np.zeros((len(warps), frames, N_MFCC), np.float32)
    for begin in range(0, max(len(samples), 1), block):
        left = max(0, begin - context)
        piece = np.asarray(samples[left:begin + block + context], dtype=np.float32)
        if piece.size == 0:
            break
        values = _mfcc_block(piece, rate, hop, warps)
        first = (begin - left) // hop
        count = min(block // hop, frames - begin // hop)
        out[:, begin // hop:begin // hop + count] = values[:, first:first + count]
    return out


def _mfcc_block(samples: np.ndarray, rate: int, hop: int, warps: tuple[float, ...]) -> np.ndarray:
    from scipy.fft import dct

    n_fft = 1024 if rate > 16000 else 512
    # centred frames, as a padded signal sliced every `hop` samples
    padded = np.pad(samples.astype(np.float32), (n_fft // 2, n_fft // 2), mode="reflect" if len(samples) > n_fft
                    else "constant")
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:count]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1].astype(np.float32), axis=1)) ** 2
    result = []
    for warp in warps:
        bank = mel_filterbank(rate, n_fft, 40, 60.0 * warp, min(8000.0 * warp, rate / 2))
        log_mel = np.log(power @ bank.T + 1e-8)
        result.append(dct(log_mel, type=2, norm="ortho", axis=1)[:, 1:N_MFCC + 1])
    return np.stack(result).astype(np.float32)


def mel_filterbank(rate: int, n_fft: int, bands: int, low: float, high: float) -> np.ndarray:
    """[bands, n_fft // 2 + 1] triangular filters evenly spaced on the HTK mel scale, each of unit area."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    edges = to_hz(np.linspace(to_mel(low), to_mel(high), bands + 2))
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    bank = np.zeros((bands, len(bins)))
    for band in range(bands):
        left, centre, right = edges[band:band + 3]
        rising = (bins - left) / (centre - left)
        falling = (right - bins) / (right - centre)
        bank[band] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (right - left)
    return bank.astype(np.float32)


def level_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS level (dBFS) of each 20 ms frame; frame t covers [t, t + 1) / FRAME_RATE seconds."""
    hop = hop_of(rate)
    frames = frame_count(len(samples), rate)
    out = np.empty(frames, np.float32)
    for begin in range(0, frames, 60000):  # 20 minutes at a time
        piece = np.asarray(samples[begin * hop:(begin + 60000) * hop], dtype=np.float32)
        count = min(60000, frames - begin)
        padded = np.zeros(count * hop, np.float32)
        padded[:piece.size] = piece
        power = np.mean(padded.reshape(count, hop).astype(np.float64) ** 2, axis=1)
        out[begin:begin + count] = 10.0 * np.log10(np.maximum(power, 1e-12))
    return out


def standardise(features: np.ndarray) -> np.ndarray:
    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-5
    return ((features - mean) / std).astype(np.float32)


def standardise_sliding(features: np.ndarray, window: int) -> np.ndarray:
    """Mean and variance over the `window` frames around each frame (fewer at the ends), by cumulative sums."""
    count = len(features)
    if count <= window:
        return standardise(features)
    values = features.astype(np.float64)
    sums = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    squares = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values ** 2, axis=0)])
    low = np.clip(np.arange(count) - window // 2, 0, count - window)
    high = low + window
    mean = (sums[high] - sums[low]) / window
    variance = (squares[high] - squares[low]) / window - mean ** 2
    return ((values - mean) / np.sqrt(np.maximum(variance, 1e-6))).astype(np.float32)
