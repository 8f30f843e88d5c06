"""Synthesis through the official `qwen_tts.Qwen3TTSModel` API, with explicit settings and per-file statistics.

Modes:
- `xvector`: voice cloning conditioned on the speaker embedding only (`x_vector_only_mode=True`);
- `icl`: voice cloning that also continues from the reference clip's codes and transcript (in-context learning);
- `custom`: a named speaker of a CustomVoice model (`generate_custom_voice(speaker=...)`).
Streaming vs non-streaming is the `non_streaming_mode` flag of those functions: streaming feeds the text alongside
the first frames (the voice-clone default), non-streaming feeds all text first (the CustomVoice default).

Every sampling knob is passed explicitly, so a model folder's `generation_config.json` never changes results
silently; the settings used are written next to the audio. The max-length guard is `max_new_tokens` (frames at
12.5 per second): the base model misses EOS in a small share of generations and would otherwise run for minutes.

EOS reached or cut: `generate()` returns the frames before EOS. The token sampled at the last allowed step is never
fed back, so a generation that hits the guard returns max_new_tokens - 1 frames, and one that samples EOS exactly
at the last step looks the same; both count as cut (the conservative reading). Anything shorter reached EOS.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ..files import write_json_atomic
from ..noise import quiet_generation_notes
from .audio_stats import DEFAULT_SILENCE_DBFS, audio_stats

MODES = ("xvector", "icl", "custom")


@dataclass
class SamplingSettings:
    """What `generate()` samples with; the defaults are the qwen_tts defaults, spelled out."""

    do_sample: bool = True
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 0.9
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = True
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    subtalker_temperature: float = 0.9
    max_new_tokens: int = 1024  # frames; 1024 / 12.5 = 82 seconds
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        return dict(do_sample=self.do_sample, top_k=self.top_k, top_p=self.top_p, temperature=self.temperature,
                    repetition_penalty=self.repetition_penalty, subtalker_dosample=self.subtalker_do_sample,
                    subtalker_top_k=self.subtalker_top_k, subtalker_top_p=self.subtalker_top_p,
                    subtalker_temperature=self.subtalker_temperature, max_new_tokens=self.max_new_tokens)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Voice:
    """Who speaks. Voice cloning takes reference audio, or a precomputed x-vector (and reference codes for ICL), as
    held-out shard samples carry them; custom takes a speaker name."""

    mode: str
    label: str = "voice"
    ref_audio: Optional[tuple[np.ndarray, int]] = None
    ref_text: Optional[str] = None
    xvector: Any = None  # torch tensor [hidden], skips the speaker encoder
    ref_codes: Any = None  # torch tensor [frames, 16], skips encoding the reference for ICL
    speaker: Optional[str] = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"voice mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.mode == "custom" and not self.speaker:
            raise ValueError("custom voice mode needs a speaker name (--speaker)")
        if self.mode != "custom" and self.ref_audio is None and self.xvector is None:
            raise ValueError(f"{self.mode} voice cloning needs reference audio (--ref-audio)")
        if self.mode == "icl" and not self.ref_text:
            raise ValueError("icl voice cloning needs the reference clip's transcript (--ref-text)")
        if self.mode == "icl" and self.ref_audio is None and self.ref_codes is None:
            raise ValueError("icl voice cloning needs reference audio or reference codes")


@dataclass
class Synthesis:
    """One synthesised sentence and what is known about it."""

    index: int
    text: str
    voice: str
    wav: np.ndarray = field(repr=False)
    sample_rate: int
    frames: int
    eos_reached: bool
    stats: dict[str, float]

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "voice": self.voice, "frames": self.frames,
                "eos_reached": self.eos_reached, "cut": not self.eos_reached, **self.stats}


# ---------------------------------------------------------------------------------------------- model folders


def open_model(folder: str | Path, languages: Sequence[str] = ("swedish",), dtype: Any = None) -> Any:
    """Load a model folder with `Qwen3TTSModel.from_pretrained`, after checks whose errors say what to do."""
    from ..modeling import load_model

    from ..export import check_exported_folder

    folder = check_exported_folder(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    registered = set((config.get("talker_config") or {}).get("codec_language_id") or {})
    for language in languages:
        if language.lower() != "auto" and language.lower() not in registered:
            raise ValueError(f"language {language} is not registered in {folder / 'config.json'}: run "
                             f"`qwen-swe add-language {folder} --name {language}` (registered: "
                             f"{', '.join(sorted(registered)) or 'none'})")
    return load_model(folder, dtype=dtype)


def model_type(wrapper: Any) -> str:
    return str(wrapper.model.tts_model_type)


def check_voice(wrapper: Any, voice: Voice) -> None:
    kind = model_type(wrapper)
    if voice.mode == "custom":
        if kind != "custom_voice":
            raise ValueError(f"custom voice mode needs a custom_voice model; this one is {kind} (use --mode xvector "
                             "or icl with --ref-audio)")
        available = wrapper.get_supported_speakers() or []
        if voice.speaker.lower() not in available:
            raise ValueError(f"speaker {voice.speaker} not in the model: available {', '.join(available) or 'none'}")
    elif kind != "base":
        raise ValueError(f"{voice.mode} voice cloning needs a Base model (with a speaker encoder); this one is "
                         f"{kind}: use --mode custom --speaker NAME")


# ---------------------------------------------------------------------------------------------- generation


@contextlib.contextmanager
def recording_frame_counts(wrapper: Any) -> Iterator[list[int]]:
    """Count the frames `generate()` returns per sentence (the wrapper hands back only audio)."""
    counts: list[int] = []
    network = wrapper.model
    original = network.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        codes, hidden = original(*args, **kwargs)
        counts.extend(int(c.shape[0]) for c in codes)
        return codes, hidden

    network.generate = generate
    try:
        yield counts
    finally:
        del network.generate  # the instance attribute hid the class method; removing it restores the original


def _clone_prompt(wrapper: Any, voice: Voice) -> list[Any]:
    """One VoiceClonePromptItem: from a precomputed x-vector (and codes) when given, else the official builder."""
    if voice.xvector is None:
        return wrapper.create_voice_clone_prompt(ref_audio=voice.ref_audio, ref_text=voice.ref_text,
                                                 x_vector_only_mode=voice.mode == "xvector")
    import torch
    from qwen_tts import VoiceClonePromptItem

    codes = voice.ref_codes
    if voice.mode == "icl" and codes is None:
        codes = wrapper.create_voice_clone_prompt(ref_audio=voice.ref_audio, ref_text=voice.ref_text)[0].ref_code
    return [VoiceClonePromptItem(
        ref_code=torch.as_tensor(codes, dtype=torch.long) if voice.mode == "icl" else None,
        ref_spk_embedding=torch.as_tensor(voice.xvector, dtype=torch.float32),
        x_vector_only_mode=voice.mode == "xvector", icl_mode=voice.mode == "icl", ref_text=voice.ref_text,
    )]


def default_streaming(voice: Voice) -> bool:
    """What qwen_tts does when not told: voice cloning streams the text, CustomVoice feeds it all first."""
    return voice.mode != "custom"


def synthesize(wrapper: Any, texts: Sequence[str], voice: Voice, settings: SamplingSettings,
               language: str = "swedish", streaming: Optional[bool] = None, batch_size: int = 4,
               silence_dbfs: float = DEFAULT_SILENCE_DBFS, first_index: int = 0, progress: bool = False) -> list[Synthesis]:
    """Synthesise `texts` in `voice`; batches of `batch_size` sentences, seeded per batch (settings.seed + batch)."""
    import torch
    from tqdm.auto import tqdm

    check_voice(wrapper, voice)
    streaming = default_streaming(voice) if streaming is None else streaming
    prompt = None if voice.mode == "custom" else _clone_prompt(wrapper, voice)
    results: list[Synthesis] = []
    starts = range(0, len(texts), max(1, batch_size))
    for number, start in enumerate(tqdm(starts, desc=f"synthesising ({voice.label})", unit="batch",
                                        disable=not progress)):
        batch = list(texts[start:start + batch_size])
        torch.manual_seed(settings.seed + number)
        with recording_frame_counts(wrapper) as counts, quiet_generation_notes():
            if voice.mode == "custom":
                wavs, rate = wrapper.generate_custom_voice(text=batch, speaker=voice.speaker, language=language,
                                                           non_streaming_mode=not streaming,
                                                           **settings.generate_kwargs())
            else:
                wavs, rate = wrapper.generate_voice_clone(text=batch, language=language,
                                                          voice_clone_prompt=prompt * len(batch),
                                                          non_streaming_mode=not streaming,
                                                          **settings.generate_kwargs())
        for offset, (text, wav, frames) in enumerate(zip(batch, wavs, counts)):
            wav = np.asarray(wav, dtype=np.float32).reshape(-1)
            results.append(Synthesis(
                index=first_index + start + offset, text=text, voice=voice.label, wav=wav, sample_rate=int(rate),
                frames=frames, eos_reached=frames < settings.max_new_tokens - 1,
                stats=audio_stats(wav, int(rate), silence_dbfs).as_dict(),
            ))
    return results


def write_syntheses(out_dir: str | Path, results: Sequence[Synthesis], settings: SamplingSettings,
                    extra: Optional[dict[str, Any]] = None) -> Path:
    """WAVs (`<index>_<voice>.wav`, 16-bit PCM) and `synth.json` (settings and one record per file)."""
    import soundfile as sf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for result in results:
        name = f"{result.index:03d}_{_safe(result.voice)}.wav"
        sf.write(out / name, np.clip(result.wav, -1.0, 1.0), result.sample_rate, subtype="PCM_16")
        records.append({"file": name, **result.record()})
    summary = {"settings": settings.as_dict(), **(extra or {}), "files": records,
               "eos_reached": sum(r["eos_reached"] for r in records), "cut": sum(r["cut"] for r in records)}
    path = out / "synth.json"
    write_json_atomic(path, summary, sort_keys=False)
    return path


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)[:40] or "voice"


def load_reference_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A reference clip as mono float32 and its rate (the model resamples what it needs)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such reference audio file")
    try:
        wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: cannot read audio ({error}); give a wav or flac file") from error
    return wav.mean(axis=1), int(rate)


# ---------------------------------------------------------------------------------------------- qwen-swe synth
def default_mode(model_dir: str | Path, named_speaker: bool = False) -> str:
    """How to voice sentences when not told: a named speaker for a custom_voice model (or when a speaker is named
    without reference audio), x-vector cloning otherwise. `qwen-swe synth`, `eval` and `compare` share it."""
    from ..modeling import model_kind

    return "custom" if named_speaker or model_kind(model_dir) == "custom_voice" else "xvector"


@dataclass
class SynthRequest:
    """What `qwen-swe synth` was asked for; `model` may be a training run or checkpoint (exported first)."""

    model: str
    out: str
    texts: Sequence[str] = ()  # empty: the sentences of `sentences`
    sentences: Optional[str] = None  # a file with one sentence per line, or a built-in set name (default v1)
    mode: Optional[str] = None  # None: default_mode
    ref_audio: Optional[str] = None
    ref_text: Optional[str] = None
    speaker: Optional[str] = None
    language: str = "swedish"
    streaming: Optional[bool] = None
    batch_size: int = 4
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    settings: SamplingSettings = field(default_factory=SamplingSettings)


def synthesize_request(request: SynthRequest, say: Any = print,
                       progress: bool = True) -> tuple[Path, list[Synthesis], str]:
    """Export if needed, voice the sentences, write the WAVs and synth.json; (synth.json, results, model folder)."""
    from ..export import export_if_checkpoint
    from .sentences import load_sentences

    mode = request.mode or default_mode(request.model, named_speaker=request.speaker is not None
                                        and request.ref_audio is None)
    model_dir = str(export_if_checkpoint(request.model, Path(request.out) / "model", custom_voice=mode == "custom",
                                         say=say))
    lines = list(request.texts) or load_sentences(request.sentences)
    reference = load_reference_audio(request.ref_audio) if request.ref_audio else None
    label = request.speaker or (Path(request.ref_audio).stem if request.ref_audio else mode)
    voice = Voice(mode=mode, label=label, ref_audio=reference, ref_text=request.ref_text, speaker=request.speaker)
    wrapper = open_model(model_dir, languages=(request.language,))
    results = synthesize(wrapper, lines, voice, request.settings, language=request.language,
                         streaming=request.streaming, batch_size=request.batch_size,
                         silence_dbfs=request.silence_dbfs, progress=progress)
    path = write_syntheses(request.out, results, request.settings,
                           extra={"model": str(Path(model_dir).resolve()), "mode": mode, "language": request.language})
    return path, results, model_dir
