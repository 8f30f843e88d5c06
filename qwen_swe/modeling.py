"""Loading Qwen3-TTS model folders for training and checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_FILES = ("config.json", "generation_config.json", "speech_tokenizer/config.json")


def check_model_folder(model_dir: str | Path) -> Path:
    """Fail early, naming the missing file, instead of deep inside transformers."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: not a directory; expected a Qwen3-TTS model folder")
    missing = [name for name in MODEL_FILES if not (model_dir / name).exists()]
    if not (model_dir / "model.safetensors").exists() and not (model_dir / "model.safetensors.index.json").exists():
        missing.append("model.safetensors")
    if missing:
        raise ValueError(f"{model_dir}: not a complete Qwen3-TTS model folder, missing {', '.join(missing)}")
    return model_dir


def model_kind(model_dir: str | Path) -> str:
    """The folder's `tts_model_type` ("base" or "custom_voice"); "base" when there is no config.json (a run
    directory or a checkpoint, which are exported as base unless asked otherwise)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return "base"
    return json.loads(config.read_text(encoding="utf-8")).get("tts_model_type", "base")


def skip_scikit_learn_in_transformers() -> None:
    """Keep transformers from importing scikit-learn (librosa installs it) when it loads its generation code.

    transformers 4.57 imports `sklearn.metrics` only for the confidence threshold of assisted generation, which
    qwen_tts never uses; the import costs about 2.5 s of start-up in every process (each rank of every launch).
    Only done before transformers' generation code is loaded, so a process that already has it is left alone.
    """
    import sys

    if "transformers.generation.candidate_generator" in sys.modules:
        return
    from transformers.utils import import_utils

    if hasattr(import_utils, "_sklearn_available"):
        import_utils._sklearn_available = False


def import_qwen_tts() -> Any:
    """Import qwen_tts without its import-time banners: flash-attn (`qwen-swe env` reports attention) and SoX."""
    import contextlib
    import io

    skip_scikit_learn_in_transformers()
    import_sox_quietly()
    with contextlib.redirect_stdout(io.StringIO()):
        import qwen_tts
    return qwen_tts


def import_sox_quietly() -> None:
    """qwen_tts imports the `sox` module (for its 25 Hz tokenizer; the 12 Hz models never use SoX). At import that
    module runs `sox -h` through a shell and, where the SoX program is missing, the shell's "sox: not found" and a
    "SoX could not be found!" banner reach the terminal and read like a failure. Import it once with that probe's
    stderr and that banner held back; training, export and ingest never run the SoX program (only the ingest tests
    make their recordings with it)."""
    import importlib.util
    import logging
    import os
    import sys

    if "sox" in sys.modules or importlib.util.find_spec("sox") is None:
        return

    def not_the_banner(record: logging.LogRecord) -> bool:
        return "SoX could not be found" not in record.getMessage()

    logger = logging.getLogger("sox")
    logger.addFilter(not_the_banner)
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        importlib.import_module("sox")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        logger.removeFilter(not_the_banner)


def load_model_config(model_dir: str | Path) -> Any:
    import_qwen_tts()
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig

    return Qwen3TTSConfig.from_pretrained(str(check_model_folder(model_dir)))


def load_model(model_dir: str | Path, dtype: Any = None, attn_implementation: str = "sdpa") -> Any:
    """The official wrapper (`qwen_tts.Qwen3TTSModel`): `.model` is the network, `.processor.tokenizer` the text."""
    import torch

    Qwen3TTSModel = import_qwen_tts().Qwen3TTSModel
    check_model_folder(model_dir)
    return Qwen3TTSModel.from_pretrained(
        str(model_dir), dtype=dtype or torch.float32, attn_implementation=attn_implementation
    )


def load_speaker_encoder(model_dir: str | Path, config: Any) -> Any:
    """The folder's speaker encoder alone, in fp32, its weights read from the folder's safetensors by name: the
    talker (nearly all of a model's bytes) is never loaded. Raises ValueError when the folder has none."""
    import torch
    from safetensors import safe_open

    import_qwen_tts()
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSSpeakerEncoder

    prefix = "speaker_encoder."
    state = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = handle.get_tensor(key).to(torch.float32)
    if not state:
        raise ValueError(f"{model_dir}: the model has no speaker encoder weights (a CustomVoice model?); shards need "
                         "a Base model, whose speaker encoder gives every sample its x-vector")
    encoder = Qwen3TTSSpeakerEncoder(config.speaker_encoder_config)
    encoder.load_state_dict(state, strict=True)
    return encoder.float().eval()


def speaker_embedding(encoder: Any, wav: Any, device: Any) -> Any:
    """What `Qwen3TTSForConditionalGeneration.extract_speaker_embedding` computes (the same mel front end, the same
    encoder), for a 24 kHz float32 clip, from the encoder alone."""
    import torch

    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    mels = mel_spectrogram(torch.from_numpy(wav).unsqueeze(0), n_fft=1024, num_mels=128, sampling_rate=24000,
                           hop_size=256, win_size=1024, fmin=0, fmax=12000).transpose(1, 2)
    return encoder(mels.to(device).to(next(encoder.parameters()).dtype))[0]


def load_speech_tokenizer(model_dir: str | Path) -> Any:
    """The folder's 12 Hz codec (`speech_tokenizer/`), as qwen_tts loads it."""
    import_qwen_tts()
    from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer

    return Qwen3TTSTokenizer.from_pretrained(str(Path(model_dir) / "speech_tokenizer"))


def load_text_tokenizer(model_dir: str | Path) -> Any:
    """The folder's text tokenizer exactly as `Qwen3TTSModel.from_pretrained` sets it up (its processor's)."""
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSProcessor

    return Qwen3TTSProcessor.from_pretrained(str(model_dir), fix_mistral_regex=True).tokenizer
