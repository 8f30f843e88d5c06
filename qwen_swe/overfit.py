"""`qwen-swe overfit`: a few optimizer steps on a small corpus, to see the whole graph learn.

Encodes the corpus with the model's own codec and speaker encoder at start-up (fine for a few dozen utterances; the
shard builder does this once for real corpora), registers Swedish if the model lacks it, then trains the objective
under whatever `accelerate launch` configuration it was started with. The loss on a fixed set (every sample in every
trained layout) is measured before and after, so "the loss fell" is not an accident of batch order.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Optional

import torch

from .layout import Sample, SequenceLayout

DEMO_MANIFEST = Path(__file__).parent / "demo_corpus" / "manifest.jsonl"


def read_manifest(path: str | Path) -> list[dict]:
    """JSONL lines with audio (relative to the manifest or absolute), text, optional speaker and language."""
    path = Path(path)
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
        for field in ("audio", "text"):
            if not entry.get(field):
                raise ValueError(f"{path}:{number}: missing field {field!r}")
        audio = Path(entry["audio"])
        entry["audio"] = str(audio if audio.is_absolute() else path.parent / audio)
        entry.setdefault("key", f"{path.stem}/{number:06d}")
        entries.append(entry)
    if not entries:
        raise ValueError(f"{path}: no samples")
    return entries


def encode_entries(model: Any, entries: list[dict], language: str = "swedish") -> list[Sample]:
    """Codec codes and x-vectors for every entry; the ICL reference is the next utterance of the same speaker."""
    from .data.audio import load_audio

    samples = []
    for entry in entries:
        audio = load_audio(entry["audio"])
        codes = model.speech_tokenizer.encode(audio.samples, sr=24000).audio_codes[0]
        xvector = model.extract_speaker_embedding(audio.samples, 24000)
        samples.append(Sample(key=entry["key"], text=entry["text"], codes=codes.long().cpu(),
                              language=entry.get("language", language), xvector=xvector.float().cpu().clone()))
        samples[-1].speaker_name = entry.get("speaker", "unknown")  # type: ignore[attr-defined]
    by_speaker: dict[str, list[Sample]] = {}
    for sample in samples:
        by_speaker.setdefault(sample.speaker_name, []).append(sample)  # type: ignore[attr-defined]
    for group in by_speaker.values():
        for i, sample in enumerate(group):
            reference = group[(i + 1) % len(group)]
            sample.ref_text, sample.ref_codes = reference.text, reference.codes
    return samples


def fixed_set_loss(objective: Any, layout: SequenceLayout, samples: list[Sample], layouts: list[str],
                   device: Any, batch_size: int) -> float:
    """Frame-weighted mean loss over every sample in every layout, without gradients."""
    total, weight = 0.0, 0.0
    objective.eval()
    with torch.no_grad():
        for name in layouts:
            for start in range(0, len(samples), batch_size):
                chunk = [layout.build(s, name) for s in samples[start:start + batch_size]]
                out = objective(layout.collate(chunk).to(device))
                frames = float(out["frames"])
                total += float(out["loss"]) * frames
                weight += frames
    objective.train()
    return total / max(weight, 1.0)


def run_overfit(model_dir: str, corpus: Optional[str], steps: int, lr: float, batch_size: int,
                layouts: list[str], seed: int) -> bool:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .language import add_language
    from .modeling import load_model
    from .objective import TalkerObjective

    accelerator = Accelerator()
    set_seed(seed)
    say = accelerator.print
    wrapper = load_model(model_dir)
    model = wrapper.model
    if "swedish" not in model.config.talker_config.codec_language_id:
        record = add_language(model, "swedish")
        say(f"registered swedish at codec row {record.row} (init {record.init})")
    entries = read_manifest(corpus or DEMO_MANIFEST)
    samples = encode_entries(model, entries)
    layout = SequenceLayout(model.config, wrapper.processor.tokenizer)
    frames = sum(int(s.codes.shape[0]) for s in samples)
    say(f"{len(samples)} utterances, {frames} frames ({frames / 12.5:.0f} s of audio), layouts {', '.join(layouts)}, "
        f"{accelerator.num_processes} process(es)")

    if model.speaker_encoder is not None:
        model.speaker_encoder.requires_grad_(False)  # x-vectors are inputs; the encoder is never trained
    objective = TalkerObjective(model)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    scorer = accelerator.unwrap_model(objective)

    before = fixed_set_loss(scorer, layout, samples, layouts, accelerator.device, batch_size)
    say(f"fixed-set loss before training: {before:.4f}")
    order = random.Random(seed)
    for step in range(1, steps + 1):
        name = layouts[(step - 1) % len(layouts)]
        # Every rank draws the same global batch and keeps its own slice, so ranks never overlap.
        picked = order.sample(range(len(samples)), k=min(len(samples), batch_size * accelerator.num_processes))
        mine = picked[accelerator.process_index::accelerator.num_processes]
        batch = layout.collate([layout.build(samples[i], name) for i in mine]).to(accelerator.device)
        out = objective(batch)
        accelerator.backward(out["loss"])
        accelerator.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = accelerator.gather(out["loss"].detach().reshape(1)).mean().item()
        if not math.isfinite(loss):
            say(f"step {step}: non-finite loss {loss}; stopping")
            return False
        if step == 1 or step % 5 == 0 or step == steps:
            say(f"step {step:>4}  layout {name:<14} loss {loss:.4f}  codebook0 acc "
                f"{float(out['codebook0_accuracy']):.3f}  sub-talker acc {float(out['sub_talker_accuracy']):.3f}")
    after = fixed_set_loss(scorer, layout, samples, layouts, accelerator.device, batch_size)
    fell = after < before
    say(f"fixed-set loss after {steps} steps: {after:.4f} ({'fell' if fell else 'did NOT fall'} from {before:.4f})")
    accelerator.end_training()
    return fell
