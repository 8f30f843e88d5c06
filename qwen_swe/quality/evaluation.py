"""`qwen-swe eval`: held-out loss plus synthesis metrics for one model folder, written as eval.json, eval.md,
TensorBoard scalars and audio, and the WAVs.

Synthesis metrics, per file and over the set:
- wer, cer: ASR transcript of the synthesis against the sentence (both normalised), through the shipped `evaluate`
  modules; only with an ASR folder.
- speaker_similarity: cosine of speaker embeddings of the reference clip and the synthesis. A cloned voice's reference
  is its held-out clip; a named voice's is the longest train-split clip of its speaker, embedded with --speaker-model
  (a custom-voice model has no speaker encoder).
- duration_ratio: synthesis seconds / expected seconds, where expected = the reference speaker's seconds per spoken
  character (letters and digits of the reference clip) x the sentence's spoken characters. 1.0 is the speaker's own
  pace; far above means drawling or trailing noise, far below means skipped words. A named voice without a clip of
  its speaker is paced like the mean of the held-out references; without shards the ratio is omitted.
- silence_rate: share of 20 ms windows below the silence threshold (-40 dBFS by default).
- eos_runaway_rate: share of syntheses cut at the max-length guard instead of ending with EOS.

Several corpora (`--source NAME=SHARDS`, repeatable): each source's eval split is evaluated on its own, held-out loss
and synthesis in its held-out speakers' voices (zero-shot cloning similarity per corpus), under `sources` in
eval.json and as `METRIC@NAME` among the headline metrics, so `qwen-swe compare --gates heldout_loss@english`
can refuse a model that forgot English, or one whose cloning got worse on any corpus.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..files import write_json_atomic, write_text_atomic
from .audio_stats import DEFAULT_SILENCE_DBFS
from .synth import SamplingSettings, Synthesis, Voice, synthesize, write_syntheses

EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
# Gate direction of every headline metric: does lower or higher mean better?
LOWER_IS_BETTER = ("heldout_loss", "wer", "cer", "silence_rate", "eos_runaway_rate", "duration_error")
HIGHER_IS_BETTER = ("codebook0_accuracy", "eos_accuracy", "sub_talker_accuracy", "speaker_similarity")


@dataclass
class EvalConfig:
    model: str
    out: str
    shards: Optional[str] = None
    split: str = "eval"
    layouts: tuple[str, ...] = ("streaming",)
    frame_budget: int = 2048
    max_batches: int = 0
    sentences: Optional[str] = None  # a text file, or None / "v1" for the built-in set
    max_sentences: int = 0
    speakers: int = 4  # held-out speakers used as references (0 = all)
    mode: str = "xvector"  # xvector | icl | custom
    custom_speakers: tuple[str, ...] = ()  # custom mode: names (default: every speaker of the model)
    streaming: Optional[bool] = None
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    asr: Optional[str] = None
    speaker_model: Optional[str] = None
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    batch_size: int = 4
    language: str = "swedish"
    heldout: bool = True
    synthesis: bool = True
    audio_samples: int = 4  # syntheses logged to TensorBoard as audio
    step: int = 0  # TensorBoard step (e.g. the training step of the exported checkpoint)
    progress: bool = True
    sources: tuple[tuple[str, str], ...] = ()  # (name, shard folder): corpora evaluated one by one besides `shards`


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _voices(config: EvalConfig, wrapper: Any, say: Callable[[str], None]) -> tuple[list[Voice], dict[str, Any], list]:
    """Voices to synthesise with, each voice's reference (for similarity and pace), and the references themselves."""
    from .references import heldout_references, seconds_per_character

    references = []
    if config.shards:
        references = heldout_references(wrapper, config.shards, config.split, config.speakers)
        say(f"references: {', '.join(f'{r.speaker} ({r.key}, {r.seconds:.1f} s)' for r in references)}")
    if config.mode == "custom":
        names = list(config.custom_speakers) or list(wrapper.get_supported_speakers() or [])
        # A named voice is compared with (and paced like) the training speaker it was made from; voices whose
        # speaker has no train-split clip here fall back to the held-out speakers' mean pace.
        own = _named_voice_references(config, wrapper, names, say) if config.shards else {}
        pace = _mean([seconds_per_character(r) for r in references])
        voices = [Voice("custom", label=name, speaker=name) for name in names]
        by_voice = {name: {"reference": own.get(name),
                           "pace": seconds_per_character(own[name]) if name in own else pace} for name in names}
        return voices, by_voice, list(own.values()) or references
    if not references:
        raise ValueError("voice cloning needs held-out references: give --shards with an eval split "
                         "(or use --mode custom with a custom_voice model)")
    voices = [r.voice(config.mode) for r in references]
    return voices, {r.speaker: {"reference": r, "pace": seconds_per_character(r)} for r in references}, references


def _named_voice_references(config: EvalConfig, wrapper: Any, names: Sequence[str],
                            say: Callable[[str], None]) -> dict[str, Any]:
    """Voice name -> the longest train-split clip of the training speaker the voice was made from (where found).

    `qwen-swe export` records each voice's speaker in config.json (a voice name may carry a prefix); a voice it
    does not list is taken to be named after its speaker.
    """
    from .references import speaker_references

    export = (getattr(wrapper.model.config, "qwen_swe", None) or {}).get("export") or {}
    source_of = {name: (export.get("speaker_sources") or {}).get(name, name) for name in names}
    own: dict[str, Any] = {}
    try:
        found = speaker_references(wrapper, config.shards, list(source_of.values()))
        own = {name: found[source_of[name]] for name in names if source_of[name] in found}
    except ValueError as error:  # e.g. a shard folder with an eval split only
        say(f"no training clips to compare named voices with: {error}")
    missing = [name for name in names if name not in own]
    if missing:
        say(f"no train-split clip for voice(s) {', '.join(missing)}: no speaker similarity for them")
    return own


def synthesis_metrics(config: EvalConfig, wrapper: Any, sentences: list[str], out: Path,
                      say: Callable[[str], None]) -> tuple[dict[str, Any], list[Synthesis]]:
    from .references import spoken_characters
    from .speaker import load_speaker_embedder

    voices, by_voice, references = _voices(config, wrapper, say)
    embedder = None
    if config.mode != "custom":
        embedder = load_speaker_embedder(config.speaker_model or wrapper)
    elif any(info["reference"] is not None for info in by_voice.values()):
        try:  # a custom-voice model has no speaker encoder of its own: --speaker-model gives one
            embedder = load_speaker_embedder(config.speaker_model or wrapper)
        except ValueError as error:
            say(f"no speaker similarity for named voices: {error}")
    results: list[Synthesis] = []
    for voice in voices:
        results += synthesize(wrapper, sentences, voice, config.sampling, language=config.language,
                              streaming=config.streaming, batch_size=config.batch_size,
                              silence_dbfs=config.silence_dbfs, first_index=len(results), progress=config.progress)
    records = [r.record() for r in results]
    reference_embeddings: dict[str, np.ndarray] = {}
    for record, result in zip(records, results):
        info = by_voice[result.voice]
        reference = info["reference"]
        if embedder is not None and reference is not None:
            if result.voice not in reference_embeddings:
                reference_embeddings[result.voice] = embedder.embed(*reference.audio())
            from .speaker import cosine_similarity

            record["speaker_similarity"] = cosine_similarity(reference_embeddings[result.voice],
                                                             embedder.embed(result.wav, result.sample_rate))
        else:
            record["speaker_similarity"] = None
        expected = info["pace"] * spoken_characters(result.text) if info["pace"] else None
        record["expected_seconds"] = expected
        record["duration_ratio"] = record["seconds"] / expected if expected else None
    error_rates: dict[str, Optional[float]] = {"wer": None, "cer": None}
    if config.asr:
        from .asr import load_asr, transcribe
        from .text_metrics import error_rates as score

        say(f"transcribing {len(results)} syntheses with {config.asr}")
        transcripts = transcribe(load_asr(config.asr), [(r.wav, r.sample_rate) for r in results],
                                 language=config.language, batch_size=config.batch_size)
        for record, transcript in zip(records, transcripts):
            record["transcript"] = transcript
            record.update({f"file_{k}": v for k, v in score([record["text"]], [transcript]).items()})
        error_rates = score([r["text"] for r in records], transcripts)
    ratios = [r["duration_ratio"] for r in records]
    metrics = {
        **error_rates,
        "speaker_similarity": _mean([r["speaker_similarity"] for r in records]),
        "duration_ratio": _mean(ratios),
        # |log ratio| treats twice too long and half too short alike; 0 is the speaker's pace.
        "duration_error": _mean([abs(float(np.log(x))) if x else None for x in ratios]),
        "silence_rate": _mean([r["silence_rate"] for r in records]),
        "eos_runaway_rate": float(np.mean([r["cut"] for r in records])) if records else None,
        "syntheses": len(records),
    }
    write_syntheses(out / "audio", results, config.sampling, extra={"model": config.model})
    if references:
        _write_references(out / "references", references)
    section = {"sentences": sentences, "mode": config.mode, "voices": [v.label for v in voices],
               "streaming": config.streaming if config.streaming is not None else config.mode != "custom",
               "asr": config.asr, "speaker_embedder": getattr(embedder, "name", None),
               "references": [{"speaker": r.speaker, "key": r.key, "text": r.text, "seconds": r.seconds}
                              for r in references],
               "metrics": metrics, "files": records}
    return section, results


def _write_references(folder: Path, references: list) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for reference in references:
        name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in reference.speaker)
        wav, rate = reference.audio()
        sf.write(folder / f"{name}.wav", np.clip(wav, -1, 1), rate, subtype="PCM_16")


def headline_metrics(heldout: Optional[dict[str, Any]], synthesis: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The flat metrics `qwen-swe compare` gates on (absent parts are None)."""
    flat: dict[str, Any] = {"heldout_loss": None, "codebook0_accuracy": None, "eos_accuracy": None,
                            "sub_talker_accuracy": None}
    if heldout:
        flat.update(heldout_loss=heldout["loss"], codebook0_accuracy=heldout["codebook0_accuracy"],
                    eos_accuracy=heldout["eos_accuracy"], sub_talker_accuracy=heldout["sub_talker_accuracy"])
    for key in ("wer", "cer", "speaker_similarity", "duration_ratio", "duration_error", "silence_rate",
                "eos_runaway_rate"):
        flat[key] = synthesis["metrics"][key] if synthesis else None
    return flat


def run_evaluation(config: EvalConfig, say: Callable[[str], None] = print, wrapper: Any = None) -> dict[str, Any]:
    """Evaluate `config.model` into `config.out`; returns what eval.json holds."""
    from .report import render_eval_markdown
    from .sentences import load_sentences
    from .synth import open_model

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if not config.heldout and not config.synthesis:
        raise ValueError("nothing to evaluate: both the held-out loss and synthesis are switched off")
    if config.heldout and not config.shards and not config.sources:
        raise ValueError("the held-out loss needs --shards (a shard folder with an eval split) or --source; or pass "
                         "--no-heldout")
    source = config.model
    if wrapper is None:
        from ..export import export_if_checkpoint

        config.model = str(export_if_checkpoint(source, out / "model", custom_voice=config.mode == "custom", say=say))
        wrapper = open_model(config.model, languages=(config.language,))
    sentences = load_sentences(config.sentences) if config.synthesis else []
    if config.max_sentences > 0:
        sentences = sentences[:config.max_sentences]
    heldout, synthesis, results = None, None, []
    if config.shards or not config.sources:  # with sources only, every number is per source
        heldout, synthesis, results = _evaluate_part(config, wrapper, sentences, out, say)
    metrics = headline_metrics(heldout, synthesis)
    by_source: dict[str, Any] = {}
    for name, folder in config.sources:
        say(f"source {name} ({folder}):")
        part = dataclasses.replace(config, shards=folder, sources=())
        source_heldout, source_synthesis, source_results = _evaluate_part(part, wrapper, sentences,
                                                                          out / "sources" / name, say)
        results = results or source_results  # TensorBoard's audio: the main part's, else the first source's
        source_metrics = headline_metrics(source_heldout, source_synthesis)
        by_source[name] = {"shards": folder, "metrics": source_metrics, "heldout": source_heldout,
                           "synthesis": source_synthesis}
        metrics.update({f"{key}@{name}": value for key, value in source_metrics.items()})
    report = {
        "model": str(Path(config.model).resolve()),
        "source": str(Path(source).resolve()),  # the checkpoint the model was exported from, or the model itself
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "config": {k: v for k, v in asdict(config).items() if k not in ("sampling", "progress")},
        "sampling": config.sampling.as_dict(),
        "metrics": metrics,
        "heldout": heldout,
        "synthesis": synthesis,
        "sources": by_source,
    }
    write_json_atomic(out / EVAL_JSON, report, sort_keys=False)
    write_text_atomic(out / EVAL_MD, render_eval_markdown(report))
    write_tensorboard(out / "tb", report, results, config.step, config.audio_samples)
    return report


def _evaluate_part(config: EvalConfig, wrapper: Any, sentences: list[str], out: Path,
                   say: Callable[[str], None]) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]], list]:
    """The held-out loss and the synthesis metrics on `config.shards` (either may be switched off)."""
    heldout = None
    if config.heldout:
        from .heldout import heldout_metrics

        heldout = heldout_metrics(wrapper, config.shards, config.split, config.layouts, config.frame_budget,
                                  config.max_batches, language=config.language, progress=config.progress)
        say(f"held-out loss {heldout['loss']:.4f} over {heldout['frames']:.0f} frames")
    synthesis, results = None, []
    if config.synthesis:
        synthesis, results = synthesis_metrics(config, wrapper, sentences, out, say)
    return heldout, synthesis, results


def write_tensorboard(folder: Path, report: dict[str, Any], results: Sequence[Synthesis], step: int,
                      audio_samples: int) -> None:
    """Scalars `eval/<metric>` (`eval/<metric>@<source>` per source, and `eval/heldout/<layout>/<metric>`) and the
    first syntheses as audio."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key, value in report["metrics"].items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"eval/{key}", value, step)
        for name, metrics in ((report.get("heldout") or {}).get("layouts") or {}).items():
            for key, value in metrics.items():
                writer.add_scalar(f"eval/heldout/{name}/{key}", value, step)
        log_audio(writer, results[:audio_samples], step)
    finally:
        writer.close()


def log_audio(writer: Any, results: Sequence[Synthesis], step: int, tag: str = "eval/audio") -> None:
    import torch

    for result in results:
        writer.add_audio(f"{tag}/{result.index:03d}_{result.voice}", torch.from_numpy(np.clip(result.wav, -1, 1)),
                         step, sample_rate=result.sample_rate)
        writer.add_text(f"{tag}/{result.index:03d}_{result.voice}/text", result.text, step)
