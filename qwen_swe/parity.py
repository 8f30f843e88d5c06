"""Parity between the training graph and what qwen_tts inference runs, measured with hooks.

For each layout, language and speaker conditioning, the installed qwen_tts generates a few frames while hooks record
what the talker is fed (prompt embeddings and every teacher-forced frame embedding), the logits it computes before
emitting each frame, and what the code predictor is fed and computes for each frame. The generated codes are then
laid out by `layout.SequenceLayout` and run through `objective.TalkerObjective` in one teacher-forced pass, and the
two sides are compared. Nothing on the inference side calls this package's code.

Users run `qwen-swe parity --model DIR` after upgrading qwen-tts or transformers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch

from .layout import Sample, SequenceLayout
from .model_shapes import LAYOUTS, SAMPLE_RATE
from .noise import quiet_generation_notes
from .objective import TalkerObjective

# At float32, a released model's logits (around 18) differ by more than 1e-5 between the incremental inference pass
# and the one teacher-forced pass through an exact graph: false alarms that hide real bugs. So both sides run in
# float64, and each difference is measured against the size of what is compared (divided by the larger of 1 and
# the largest magnitude): what remains is the float32 arithmetic qwen_tts keeps inside (its RMSNorm and rotary
# embeddings, about 1e-7 relative), while the bugs this check exists for (a dropped text projection, a double shift,
# the sub-talker fed the wrong hidden state) differ by whole units.
TOLERANCE = 1e-5
PARITY_TEXT = "Hej! Jag heter Astrid och bor i Göteborg, nära älven."
REFERENCE_TEXT = "Det här är en kort mening på svenska."


@dataclass
class Capture:
    talker_inputs: list[torch.Tensor] = field(default_factory=list)  # per talker call [1, n, H]
    talker_logits: list[torch.Tensor] = field(default_factory=list)  # per talker call [1, n, V]
    predictor_inputs: list[list[torch.Tensor]] = field(default_factory=list)  # per frame, per call
    predictor_logits: list[list[torch.Tensor]] = field(default_factory=list)
    codes: Optional[torch.Tensor] = None


@dataclass
class ParityResult:
    layout: str
    language: str
    speaker: str
    frames: int
    embeddings: float
    talker_logits: float
    predictor_inputs: float
    predictor_logits: float

    @property
    def ok(self) -> bool:
        return max(self.embeddings, self.talker_logits, self.predictor_inputs, self.predictor_logits) <= TOLERANCE

    def as_dict(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


@contextmanager
def capture_inference(model: Any) -> Iterator[Capture]:
    """Record the talker and code-predictor traffic of one `Qwen3TTSForConditionalGeneration.generate` call."""
    capture = Capture()
    talker = model.talker
    predictor = talker.code_predictor

    def talker_inputs(_module, _args, kwargs):
        capture.talker_inputs.append(kwargs["inputs_embeds"].detach().clone())

    def talker_logits(_module, _inputs, output):
        capture.talker_logits.append(output.detach().clone())

    def predictor_inputs(_module, args):
        embeds = args[0]
        if embeds.shape[1] > 1:  # the prefill of a new frame: [talker hidden, codebook-0 embedding]
            capture.predictor_inputs.append([])
            capture.predictor_logits.append([])
        capture.predictor_inputs[-1].append(embeds.detach().clone())

    def predictor_logits(_module, _args, _kwargs, output):
        capture.predictor_logits[-1].append(output.logits[:, -1:].detach().clone())

    original_generate = model.generate

    def generate_and_keep_codes(*args, **kwargs):
        codes, hidden = original_generate(*args, **kwargs)
        capture.codes = codes[0].detach().clone()
        return codes, hidden

    handles = [
        talker.model.register_forward_pre_hook(talker_inputs, with_kwargs=True),
        talker.codec_head.register_forward_hook(talker_logits),
        predictor.small_to_mtp_projection.register_forward_pre_hook(predictor_inputs),
        predictor.register_forward_hook(predictor_logits, with_kwargs=True),
    ]
    model.generate = generate_and_keep_codes
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
        del model.generate  # the instance attribute; the class method is visible again


def reference_audio(seconds: float = 2.0, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-sounding reference: harmonics with a slow pitch glide and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.2 * wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the size of what is compared: max|a - b| / max(1, max|b|)."""
    if a.shape != b.shape:
        return float("inf")
    if not a.numel():
        return 0.0
    return float((a.double() - b.double()).abs().max()) / max(1.0, float(b.double().abs().max()))


def compare(objective: TalkerObjective, layout: SequenceLayout, capture: Capture, sample: Sample, name: str):
    """Teacher-force the captured codes through the training graph and measure the largest differences."""
    laid = layout.build(sample, name)
    batch = layout.collate([laid])
    with torch.no_grad():
        embeds = objective.input_embeddings(batch)[0]
        hidden, logits = objective.talker_forward(batch)
        predictor_inputs = objective.sub_talker_inputs(hidden, batch)
        predictor_logits = objective.talker.code_predictor.forward_finetune(inputs_embeds=predictor_inputs).logits

    fed = torch.cat(capture.talker_inputs, dim=1)[0]
    inference_logits = torch.cat(capture.talker_logits, dim=1)[0]
    frames = len(capture.predictor_inputs)
    # One code-predictor run per fed frame; its inputs are projected by small_to_mtp_projection first.
    captured_inputs = torch.stack([torch.cat(steps, dim=1)[0] for steps in capture.predictor_inputs])
    captured_logits = torch.stack([torch.cat(steps, dim=1)[0] for steps in capture.predictor_logits])
    return dict(
        frames=frames,
        embeddings=_max_diff(embeds, fed),
        talker_logits=_max_diff(logits[0], inference_logits),
        predictor_inputs=_max_diff(predictor_inputs[:frames], captured_inputs),
        predictor_logits=_max_diff(predictor_logits[:frames], captured_logits[:, : predictor_logits.shape[1]]),
    )


def conditions(model: Any, layouts: list[str]) -> list[tuple[str, str, str]]:
    """(layout, language, speaker mode) triples this model supports: auto, one released language, swedish."""
    config = model.config.talker_config
    languages = sorted(dict(config.codec_language_id))
    released = ([name for name in ("german", "english") if name in languages] or [
        n for n in languages if "dialect" not in n and n != "swedish"
    ])[:1]
    picked = ["auto"] + released + (["swedish"] if "swedish" in languages else [])
    has_encoder = getattr(model, "speaker_encoder", None) is not None
    speakers = sorted(dict(config.spk_id or {}))
    out = []
    for name in layouts:
        if name.startswith("icl") and not has_encoder:
            continue  # ICL prompts need a speaker encoder (Base models)
        for language in picked:
            out.append((name, language, "xvector" if has_encoder else f"speaker:{speakers[0]}"))
            if speakers and has_encoder and not name.startswith("icl"):
                out.append((name, language, f"speaker:{speakers[0]}"))
    return out


def run_parity(model_dir: str, layouts: Optional[list[str]] = None, frames: int = 6, seed: int = 0,
               dtype: torch.dtype = torch.float64) -> list[ParityResult]:
    """Run every supported parity condition against the model folder and the installed qwen_tts (both in `dtype`)."""
    from .modeling import load_model

    torch.manual_seed(seed)
    wrapper = load_model(model_dir, dtype=dtype)
    model = wrapper.model.eval()
    layout = SequenceLayout(model.config, wrapper.processor.tokenizer)
    objective = TalkerObjective(model).eval()
    wav = reference_audio()
    results = []
    for name, language, speaker in conditions(model, list(layouts or LAYOUTS)):
        streaming = name in ("streaming", "icl")
        torch.manual_seed(seed)
        sample = Sample(key=f"parity/{name}/{language}/{speaker}", text=PARITY_TEXT, codes=None, language=language)
        gen = dict(max_new_tokens=frames + 1, do_sample=True, subtalker_dosample=True, non_streaming_mode=not streaming)
        with capture_inference(model) as capture, quiet_generation_notes():
            if speaker.startswith("speaker:"):
                sample.speaker = speaker.split(":", 1)[1]
                model.generate(
                    input_ids=wrapper._tokenize_texts([wrapper._build_assistant_text(PARITY_TEXT)]),
                    languages=[language], speakers=[sample.speaker], **gen,
                )
            else:
                icl = name.startswith("icl")
                prompt = wrapper.create_voice_clone_prompt(
                    ref_audio=(wav, SAMPLE_RATE), ref_text=REFERENCE_TEXT if icl else None, x_vector_only_mode=not icl
                )
                sample.xvector = prompt[0].ref_spk_embedding.to(model.dtype)
                if icl:
                    sample.ref_text, sample.ref_codes = REFERENCE_TEXT, prompt[0].ref_code.long()
                wrapper.generate_voice_clone(text=PARITY_TEXT, language=language, voice_clone_prompt=prompt, **gen)
        sample.codes = capture.codes.long()
        diffs = compare(objective, layout, capture, sample, name)
        results.append(ParityResult(layout=name, language=language, speaker=speaker, **diffs))
    return results
