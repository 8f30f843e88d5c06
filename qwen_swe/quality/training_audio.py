"""Audio in TensorBoard during training: synthesise a few fixed sentences and log them at the current step.

The trainer can call `synthesize_for_tensorboard` every K evaluations with its SummaryWriter. It synthesises through
the official `Qwen3TTSModel` API, so what is heard is what inference produces from the current weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from .audio_stats import DEFAULT_SILENCE_DBFS
from .synth import SamplingSettings, Synthesis, Voice, open_model, synthesize


def default_voice(wrapper: Any, shards: Optional[str | Path] = None, split: str = "eval", mode: str = "xvector") -> Voice:
    """The first custom speaker of a custom_voice model; else the first held-out speaker of `shards`."""
    if wrapper.model.tts_model_type == "custom_voice":
        speakers = wrapper.get_supported_speakers() or []
        if not speakers:
            raise ValueError("this custom_voice model names no speakers")
        return Voice("custom", label=speakers[0], speaker=speakers[0])
    if shards is None:
        raise ValueError("a Base model clones a voice: give shards with an eval split (or a Voice)")
    from .references import heldout_references

    return heldout_references(wrapper, shards, split, speakers=1)[0].voice(mode)


def synthesize_for_tensorboard(model: Any, writer: Any, step: int, sentences: Optional[Sequence[str]] = None,
                               voice: Optional[Voice] = None, shards: Optional[str | Path] = None,
                               settings: Optional[SamplingSettings] = None, language: str = "swedish",
                               max_sentences: int = 3, tag: str = "synthesis") -> list[Synthesis]:
    """Synthesise `sentences` (default: the first `max_sentences` built-in ones) and log audio, text and stats.

    model: a model folder or a loaded `qwen_tts.Qwen3TTSModel` (its `.model` may be the network being trained; it
    is switched to eval mode for the synthesis and back afterwards). writer: a torch SummaryWriter. Logs
    `<tag>/<index>_<voice>` audio and text, and `<tag>/seconds`, `<tag>/eos_runaway_rate`, `<tag>/silence_rate`.
    """
    import numpy as np

    from .evaluation import log_audio
    from .sentences import load_sentences

    wrapper = open_model(model, languages=(language,)) if isinstance(model, (str, Path)) else model
    texts = list(sentences) if sentences is not None else load_sentences()[:max_sentences]
    voice = voice or default_voice(wrapper, shards)
    settings = settings or SamplingSettings(max_new_tokens=600)
    network = wrapper.model
    was_training = network.training
    network.eval()
    try:
        results = synthesize(wrapper, texts, voice, settings, language=language, batch_size=len(texts),
                             silence_dbfs=DEFAULT_SILENCE_DBFS)
    finally:
        network.train(was_training)
    log_audio(writer, results, step, tag=tag)
    writer.add_scalar(f"{tag}/seconds", float(np.mean([r.stats["seconds"] for r in results])), step)
    writer.add_scalar(f"{tag}/eos_runaway_rate", float(np.mean([not r.eos_reached for r in results])), step)
    writer.add_scalar(f"{tag}/silence_rate", float(np.mean([r.stats["silence_rate"] for r in results])), step)
    return results
