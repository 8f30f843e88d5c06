"""Codec codes and x-vectors from a Qwen3-TTS model folder: its `speech_tokenizer/` codec and its speaker encoder.

Batched codes equal one-by-one codes, by construction and by test:
- the 12 Hz codec trims each clip's codes to ceil(valid samples / 1920) frames, but a clip that does not end on a
  frame boundary gets its last, partial frame from whatever follows it: the encoder's own zero padding when the clip
  is encoded alone, other activations when it sits in a padded batch. Every clip is therefore zero-padded to whole
  frames first (`pad_to_frames`, at most 80 ms of silence); the encoder is causal, so what a batch appends after a
  clip's last full frame cannot change its codes.
- what is left is float rounding: batched convolutions and matrix products round differently from single ones, and
  on a near-tie a residual codebook picks the neighbouring entry. Encoding in float64 (the default on CPU) makes
  such ties vanishingly rare; on GPUs float32 is the default for speed and a rare late-codebook code may then
  depend on the batch a clip was encoded in (still deterministic for a given build: batches are planned per shard).

X-vectors are what `extract_speaker_embedding` computes (`modeling.speaker_embedding`: the same mel front end and
encoder) on the clip itself (unpadded), one clip at a time, as inference computes them for a reference clip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..fingerprints import weight_fingerprints
from ..model_shapes import NUM_CODE_GROUPS, SAMPLE_RATE

DEVICES = ("cpu", "cuda", "rocm")
PRECISIONS = ("auto", "float32", "float64")


def resolve_device(name: str) -> str:
    """cpu, cuda, cuda:N, rocm or rocm:N -> a torch device string (ROCm builds of torch call their GPUs "cuda")."""
    import torch

    base, _, number = name.partition(":")
    if base not in DEVICES:
        raise ValueError(f"--device {name!r}: choose cpu, cuda or rocm (optionally :N)")
    if base == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        build = "ROCm" if getattr(torch.version, "hip", None) else ("CUDA" if torch.version.cuda else "CPU-only")
        raise ValueError(f"--device {name}: no GPU visible to this {build} torch build; use --device cpu or install "
                         "the torch build for your platform (see README, Install on GPU hosts)")
    return f"cuda:{number}" if number else "cuda"


def resolve_precision(precision: str, device: str) -> str:
    """auto -> float64 on the CPU (batched == one-by-one), float32 on GPUs (speed); explicit values pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"codec precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "float64" if device.partition(":")[0] == "cpu" else "float32"


def codec_frame_samples(model_dir: str | Path) -> int:
    """Samples per codec frame (1920 at 24 kHz for the 12 Hz codec), read from speech_tokenizer/config.json."""
    config_path = Path(model_dir) / "speech_tokenizer" / "config.json"
    if not config_path.exists():
        raise ValueError(f"{model_dir}: no speech_tokenizer/config.json; --model must be a Qwen3-TTS model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    rate = config.get("encode_downsample_rate")
    if not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{config_path}: no encode_downsample_rate; expected the 12 Hz codec (1920)")
    return rate


def pad_to_frames(wav: np.ndarray, frame_samples: int) -> np.ndarray:
    """Zero-pad a clip to a whole number of codec frames (see the module docstring for why)."""
    missing = (-len(wav)) % frame_samples
    return np.pad(wav, (0, missing)) if missing else wav


def plan_batches(lengths: Sequence[int], max_batch_samples: int) -> list[list[int]]:
    """Indices grouped longest first so that count x longest stays within `max_batch_samples` (padding is wasted
    compute); a clip longer than the budget goes alone. Deterministic: ties keep index order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= max_batch_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class Encoder:
    """A model folder's codec and speaker encoder on one device, and its text tokenizer (for the prompt ids stored
    with every sample). Only those are loaded: the talker, nearly all of a model's bytes (11 GB of the 1.7B in
    fp32), is never read."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", precision: str = "auto"):
        import torch

        from ..modeling import load_model_config, load_speaker_encoder, load_speech_tokenizer, load_text_tokenizer

        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        config = load_model_config(self.model_dir)
        self.speaker_encoder = load_speaker_encoder(self.model_dir, config).to(self.device)
        self.text_tokenizer = load_text_tokenizer(self.model_dir)
        self.tokenizer = load_speech_tokenizer(self.model_dir)
        self.tokenizer.model.to(device=self.device, dtype=getattr(torch, self.precision)).eval()
        self.tokenizer.device = torch.device(self.device)  # encode() moves its inputs here
        self.frame_samples = codec_frame_samples(self.model_dir)
        self.xvector_dim = int(config.speaker_encoder_config.enc_dim)

    def encode_codes(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """int16 [frames, 16] codes per clip (24 kHz mono float32), from one batched codec call."""
        padded = [pad_to_frames(np.asarray(w, dtype=np.float32), self.frame_samples) for w in wavs]
        output = self.tokenizer.encode(padded, sr=SAMPLE_RATE)
        codes = []
        for wav, clip_codes in zip(padded, output.audio_codes):
            array = clip_codes.detach().cpu().numpy()
            expected = len(wav) // self.frame_samples
            if array.shape != (expected, NUM_CODE_GROUPS):
                raise RuntimeError(f"codec returned codes of shape {list(array.shape)} for {expected} frames; "
                                   f"expected [{expected}, {NUM_CODE_GROUPS}] (is this the 12 Hz codec?)")
            codes.append(array.astype(np.int16))
        return codes

    def encode_batches(self, wavs: Sequence[np.ndarray], max_batch_seconds: float) -> list[np.ndarray]:
        """Codes for many clips, in batches planned by `plan_batches`; returned in input order."""
        budget = max(int(max_batch_seconds * SAMPLE_RATE), 1)
        lengths = [len(pad_to_frames(np.asarray(w), self.frame_samples)) for w in wavs]
        result: list[Optional[np.ndarray]] = [None] * len(wavs)
        for batch in plan_batches(lengths, budget):
            for index, codes in zip(batch, self.encode_codes([wavs[i] for i in batch])):
                result[index] = codes
        return result  # type: ignore[return-value]

    def xvector(self, wav: np.ndarray) -> np.ndarray:
        """float32 [xvector_dim] speaker embedding of one 24 kHz clip."""
        import torch

        from ..modeling import speaker_embedding

        with torch.inference_mode():
            embedding = speaker_embedding(self.speaker_encoder, np.ascontiguousarray(wav, dtype=np.float32),
                                          self.device)
        return embedding.detach().float().cpu().numpy().astype(np.float32)

    def fingerprints(self) -> dict[str, Any]:
        """What the codes and x-vectors depend on: weight hashes of the codec and of the model."""
        return {"codec": weight_fingerprints(self.model_dir / "speech_tokenizer"),
                "model": weight_fingerprints(self.model_dir)}

    def describe(self) -> dict[str, Any]:
        config = json.loads((self.model_dir / "speech_tokenizer" / "config.json").read_text(encoding="utf-8"))
        return {"model_type": config.get("model_type"), "frame_samples": self.frame_samples,
                "num_code_groups": NUM_CODE_GROUPS, "precision": self.precision}
