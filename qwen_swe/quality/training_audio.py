"""Audio in TensorBoard during training: synthesise a few fixed sentences and log them at the current step.

`TensorBoardSynthesis` is the trainer hook `qwen-swe train` adds when `run.synth_every_evals` is set: every K
held-out evals it calls `synthesize_for_tensorboard` with the run's SummaryWriter. It synthesises through the
official `Qwen3TTSModel` API, so what is heard is what inference produces from the current weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..train.hooks import TrainerHook
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


class TensorBoardSynthesis(TrainerHook):
    """Every `every_evals` held-out evals, the main process synthesises `sentences` built-in Swedish sentences in a
    held-out speaker's voice with the current weights and logs the audio. Never fails the run."""

    name = "synthesis"

    def __init__(self, every_evals: int, sentences: int):
        self.every_evals, self.sentences = every_evals, sentences
        self.warned = False  # the reason synthesis is skipped is said once
        self.voice: Optional[Voice] = None  # found on first use: scanning the eval split reads every sample's json

    def on_eval(self, trainer: Any, results: dict[str, Any]) -> None:
        config = trainer.config
        if (trainer.step // config.run.eval_every) % self.every_evals:
            return
        if trainer.zero_stage == 3 or not config.run.tensorboard:
            if not self.warned:
                trainer.say("warning: run.synth_every_evals needs TensorBoard and whole weights on one process "
                            "(not ZeRO-3); skipping in-training synthesis")
                self.warned = True
            return
        if trainer.main:
            self._synthesize(trainer)
        trainer.accelerator.wait_for_everyone()

    def _synthesize(self, trainer: Any) -> None:
        import torch

        writer = trainer.accelerator.get_tracker("tensorboard", unwrap=True)
        started = time.time()
        # Sampling draws from the global RNGs: fork them so a run with synthesis trains exactly like one without.
        devices = [trainer.accelerator.device] if trainer.device_type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            try:
                if self.voice is None:
                    first_folder = next(iter(trainer.config.data.folders().values()))
                    self.voice = default_voice(trainer.wrapper, first_folder, trainer.config.data.eval_split)
                results = synthesize_for_tensorboard(trainer.wrapper, writer, trainer.step, voice=self.voice,
                                                     max_sentences=self.sentences)
                trainer.say(f"step {trainer.step}: synthesised {len(results)} sentence(s) for TensorBoard in "
                            f"{time.time() - started:.1f} s")
            except Exception as error:  # a synthesis problem must not cost the training run
                trainer.say(f"warning: in-training synthesis failed at step {trainer.step}: {error}")


def training_hooks(config: Any) -> list[TrainerHook]:
    """The hooks a run config asks for: in-training synthesis (`run.synth_every_evals`) and the quality loop
    (`run.quality.every_evals`, quality_loop.py). `qwen-swe train` and `qwen-swe tune` pass them to the Trainer."""
    hooks: list[TrainerHook] = []
    if config.run.synth_every_evals:
        hooks.append(TensorBoardSynthesis(config.run.synth_every_evals, config.run.synth_sentences))
    if config.run.quality.every_evals:
        from .quality_loop import QualityLoop

        hooks.append(QualityLoop(config.run.quality))
    return hooks
