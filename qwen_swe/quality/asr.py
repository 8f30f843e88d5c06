"""Transcribing syntheses with a user-supplied ASR model folder (a transformers speech-recognition pipeline).

Any folder `transformers.pipeline("automatic-speech-recognition", model=folder)` loads works: a Swedish Whisper
(e.g. KBLab kb-whisper, downloaded beforehand) or a CTC model such as wav2vec2. Audio is resampled here to the
model's rate, so the pipeline never needs torchaudio's resampler. Whisper models are told the language and the task,
so they neither guess the language nor translate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def load_asr(folder: str | Path, device: str = "cpu") -> Any:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder}: no config.json; --asr takes a local transformers speech-recognition model folder "
                         "(e.g. a Swedish Whisper saved with save_pretrained or downloaded with huggingface-cli)")
    from transformers import pipeline

    try:
        return pipeline("automatic-speech-recognition", model=str(folder), device=device)
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(f"{folder}: transformers cannot build a speech-recognition pipeline from it ({error})") from error


def transcribe(asr: Any, audio: Sequence[tuple[np.ndarray, int]], language: str = "swedish",
               batch_size: int = 4) -> list[str]:
    """One transcript per (waveform, rate)."""
    from .speaker import _resample

    rate = int(asr.feature_extractor.sampling_rate)
    inputs = [{"raw": _resample(wav, sr, rate), "sampling_rate": rate} for wav, sr in audio]
    kwargs: dict[str, Any] = {}
    if getattr(asr.model.config, "model_type", "") == "whisper":
        kwargs["generate_kwargs"] = {"language": language, "task": "transcribe"}
    outputs = asr(inputs, batch_size=batch_size, **kwargs)
    return [str(out["text"]).strip() for out in outputs]
