"""Speaker similarity: cosine of speaker embeddings of a reference clip and a synthesis.

Two sources of embeddings:
- a Qwen3-TTS Base model's own speaker encoder (the one that makes the x-vectors voice cloning conditions on), which
  is the default when the evaluated model has one;
- a speaker-verification model folder that transformers loads with `AutoModelForAudioXVector` (for example a WavLM
  or UniSpeech-SAT "-sv" model), or another Qwen3-TTS Base folder, given with `--speaker-model`. An independent
  verifier keeps the metric honest when the evaluated model's own encoder was trained along with it.
Both sides of a comparison must go through the same embedder; scores from different embedders do not compare.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two embeddings in float64; 0.0 when either is all zeros (nothing to compare)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.shape[0]} vs {b.shape[0]}; use one embedder for both")
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else 0.0


def _resample(wav: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate == target:
        return wav
    import librosa

    return librosa.resample(wav, orig_sr=int(sample_rate), target_sr=int(target)).astype(np.float32)


class QwenSpeakerEmbedder:
    """The speaker encoder of a Qwen3-TTS Base model (`Qwen3TTSForConditionalGeneration.extract_speaker_embedding`)."""

    def __init__(self, wrapper: Any, name: str = "qwen3-tts speaker encoder"):
        model = wrapper.model if hasattr(wrapper, "model") else wrapper
        if getattr(model, "speaker_encoder", None) is None:
            raise ValueError(f"{name}: this model has no speaker encoder (a custom_voice model?); give a Base model "
                             "folder or a speaker-verification model with --speaker-model")
        self.model = model
        self.sample_rate = int(model.speaker_encoder_sample_rate)
        self.name = name

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            vector = self.model.extract_speaker_embedding(_resample(wav, sample_rate, self.sample_rate), self.sample_rate)
        return vector.float().cpu().numpy()


class XVectorEmbedder:
    """A transformers speaker-verification model (`AutoModelForAudioXVector`) and its feature extractor."""

    def __init__(self, folder: str | Path):
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

        self.feature_extractor = AutoFeatureExtractor.from_pretrained(str(folder))
        self.model = AutoModelForAudioXVector.from_pretrained(str(folder)).eval()
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.name = str(folder)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        features = self.feature_extractor(_resample(wav, sample_rate, self.sample_rate), sampling_rate=self.sample_rate,
                                          return_tensors="pt")
        with torch.inference_mode():
            return self.model(**features).embeddings[0].float().cpu().numpy()


def load_speaker_embedder(source: Any) -> Any:
    """An embedder from a loaded Qwen3TTSModel wrapper, or from a folder (Qwen3-TTS Base or AudioXVector model)."""
    if not isinstance(source, (str, Path)):
        return QwenSpeakerEmbedder(source)
    folder = Path(source)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: no config.json; --speaker-model takes a Qwen3-TTS Base folder or a "
                         "transformers speaker-verification folder (AutoModelForAudioXVector)")
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    if model_type == "qwen3_tts":
        from ..modeling import load_model

        return QwenSpeakerEmbedder(load_model(folder), name=f"{folder} speaker encoder")
    try:
        return XVectorEmbedder(folder)
    except (ValueError, OSError) as error:
        raise ValueError(f"{folder}: not loadable as a speaker-verification model ({error}); give a folder that "
                         "AutoModelForAudioXVector loads (e.g. a WavLM -sv model) or a Qwen3-TTS Base folder") from error


def speaker_similarity(embedder: Any, reference: tuple[np.ndarray, int], synthesis: tuple[np.ndarray, int]) -> float:
    """Cosine of the embeddings of (reference waveform, rate) and (synthesis waveform, rate)."""
    return cosine_similarity(embedder.embed(*reference), embedder.embed(*synthesis))
