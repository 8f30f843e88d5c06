"""Long recordings to 24 kHz mono 16-bit PCM on disk, decoded as a stream.

wav/flac (and whatever else libsndfile reads) are read in blocks with soundfile; m4b/m4a/mp3/ogg/opus/aac and
anything else go through PyAV (ffmpeg's decoders, bundled in the av wheel). Each block is folded to mono and
resampled by one streaming soxr resampler (very high quality, the quality `shards build` uses), then appended to a
raw 16-bit file. The caller opens the result as a numpy memmap, so hours of audio never sit in memory at once:
a ten-hour book is 1.7 GB on disk and about nothing in RAM. A progress bar shows seconds decoded and the ETA.
The file is written under a temporary name and renamed when complete, so an interrupted decode is redone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..data.build import pcm16
from ..model_shapes import SAMPLE_RATE

class DecodeError(ValueError):
    """A recording that cannot be decoded; the message names the file."""


SOUNDFILE_SUFFIXES = (".wav", ".flac", ".aiff", ".aif")
BLOCK_SECONDS = 30.0


def probe_seconds(path: Path) -> Optional[float]:
    """The recording's length if the container says it (for the progress bar); None otherwise."""
    try:
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            import soundfile

            info = soundfile.info(str(path))
            return info.frames / info.samplerate
        import av

        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / 1_000_000
    except Exception:  # only a nicer progress bar depends on it
        return None
    return None


def _soundfile_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    import soundfile

    with soundfile.SoundFile(str(path)) as handle:
        block = int(BLOCK_SECONDS * handle.samplerate)
        while True:
            data = handle.read(block, dtype="float32", always_2d=True)
            if data.shape[0] == 0:
                return
            yield data.mean(axis=1), handle.samplerate


def _pyav_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise DecodeError(f"{path}: no audio stream in this file")
        stream = container.streams.audio[0]
        # one format for every frame whatever the codec delivers: float32, interleaved, mono, the source's rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.codec_context.sample_rate)
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                yield converted.to_ndarray().reshape(-1), converted.sample_rate
        for converted in resampler.resample(None):
            yield converted.to_ndarray().reshape(-1), converted.sample_rate


def decode_to_pcm(source: Path, destination: Path, progress: bool = True) -> int:
    """Decode `source` into `destination` (raw little-endian int16, 24 kHz mono); returns the sample count."""
    import soxr

    if not source.exists():
        raise DecodeError(f"{source}: no such file")
    blocks = _soundfile_blocks(source) if source.suffix.lower() in SOUNDFILE_SUFFIXES else _pyav_blocks(source)
    temporary = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    total = probe_seconds(source)
    bar = _bar(total, f"decode {source.name}", progress)
    resampler = None
    written = 0
    try:
        with open(temporary, "wb") as out:
            for samples, rate in blocks:
                if resampler is None:
                    resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="VHQ")
                out.write(pcm16(resampler.resample_chunk(np.ascontiguousarray(samples, np.float32))).tobytes())
                written = out.tell() // 2
                if bar is not None:
                    bar.update(len(samples) / rate)
            if resampler is not None:
                out.write(pcm16(resampler.resample_chunk(np.zeros(0, np.float32), last=True)).tobytes())
                written = out.tell() // 2
    except DecodeError:
        temporary.unlink(missing_ok=True)
        raise
    except Exception as error:  # PyAV and libsndfile raise their own error types
        temporary.unlink(missing_ok=True)
        raise DecodeError(f"{source}: cannot decode audio ({error})") from error
    finally:
        if bar is not None:
            bar.close()
    if written == 0:
        temporary.unlink(missing_ok=True)
        raise DecodeError(f"{source}: the file holds no audio samples")
    os.replace(temporary, destination)
    return written


def open_pcm(path: Path) -> np.ndarray:
    """The decoded recording as a read-only int16 memmap (divide by 32768 for float)."""
    return np.memmap(path, dtype="<i2", mode="r")


class FloatView:
    """Slices of an int16 memmap as float32, so code written for float arrays reads the file block by block."""

    def __init__(self, pcm: np.ndarray):
        self.pcm = pcm

    def __len__(self) -> int:
        return len(self.pcm)

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.asarray(self.pcm[index], dtype=np.float32) / 32768.0


def _bar(total: Optional[float], label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=round(total, 1) if total else None, desc=label, unit="s", unit_scale=False,
                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s audio [{elapsed}<{remaining}]", leave=False)
