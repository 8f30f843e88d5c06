"""The position-by-position layout and collate that `qwen_swe.layout` replaced with whole-array code.

Kept verbatim in behaviour (one `put` per position, labels found by scanning the frame column, one row at a time in
collate) as the reference the vectorised layout must equal exactly; tests/test_layout.py compares them.
Validation is left to the real layout: only valid samples are given to this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from qwen_swe.layout import IGNORE, Batch, Sample, SequenceLayout


@dataclass
class LaidOut:
    """A laid-out sample as the reference makes it: one tensor per per-position column."""

    key: str
    text_ids: torch.Tensor
    codec_ids: torch.Tensor
    frame_ids: torch.Tensor
    frames: torch.Tensor
    speaker_position: int
    labels: torch.Tensor
    sub_positions: torch.Tensor
    sub_frames: torch.Tensor
    xvector: Optional[torch.Tensor] = None

    @property
    def length(self) -> int:
        return int(self.text_ids.shape[0])


def reference_build(layout: SequenceLayout, sample: Sample, name: str) -> LaidOut:
    target = sample.codes.long()
    language_row = layout._language_row(sample)
    ids = list(layout.tokenizer(f"<|im_start|>assistant\n{sample.text}<|im_end|>\n<|im_start|>assistant\n",
                                add_special_tokens=False)["input_ids"])
    role_ids, text_ids = ids[:3], ids[3:-5]
    text: list[int] = []
    codec: list[int] = []
    frame: list[int] = []

    def put(text_id: int, codec_id: int = -1, frame_id: int = -1) -> None:
        text.append(text_id)
        codec.append(codec_id)
        frame.append(frame_id)

    for token in role_ids:
        put(token)
    if language_row is None:
        prefix = [layout.codec_nothink, layout.codec_think_bos, layout.codec_think_eos]
    else:
        prefix = [layout.codec_think, layout.codec_think_bos, language_row, layout.codec_think_eos]
    for row in prefix:
        put(layout.tts_pad, row)
    speaker_position = -1
    xvector = sample.xvector.float() if sample.xvector is not None else None
    if sample.speaker:
        put(layout.tts_pad, layout.speaker_ids[sample.speaker.lower()])
    elif xvector is not None:
        speaker_position = len(text)
        put(layout.tts_pad)
    put(layout.tts_bos, layout.codec_pad)

    if name in ("icl", "icl_non_streaming"):
        reference = sample.ref_codes.long()
        frames = torch.cat([reference, target], dim=0)
        ref_ids = list(layout.tokenizer(f"<|im_start|>assistant\n{sample.ref_text}<|im_end|>\n",
                                        add_special_tokens=False)["input_ids"])[3:-2]
        prompt_text = ref_ids + text_ids + [layout.tts_eos]
        prompt_codec = [(layout.codec_bos, -1)] + [(-1, i) for i in range(reference.shape[0])]
        if name == "icl_non_streaming":
            for token in prompt_text:
                put(token, layout.codec_pad)
            for row, frame_id in prompt_codec:
                put(layout.tts_pad, row, frame_id)
            trailing: list[int] = []
        else:
            overlap = min(len(prompt_text), len(prompt_codec))
            for i, (row, frame_id) in enumerate(prompt_codec):
                put(prompt_text[i] if i < overlap else layout.tts_pad, row, frame_id)
            trailing = prompt_text[len(prompt_codec):]
        first_target, offset = reference.shape[0], reference.shape[0]
    else:
        frames, first_target, offset = target, 0, 0
        if name == "non_streaming":
            for token in text_ids:
                put(token, layout.codec_pad)
            put(layout.tts_eos, layout.codec_pad)
            put(layout.tts_pad, layout.codec_bos)
            trailing = []
        else:
            put(text_ids[0], layout.codec_bos)
            trailing = text_ids[1:] + [layout.tts_eos]
    for t in range(target.shape[0]):
        put(trailing[t] if t < len(trailing) else layout.tts_pad, -1, offset + t)

    labels = torch.full((len(text),), IGNORE, dtype=torch.long)
    target_positions = [p for p, f in enumerate(frame) if f >= first_target]
    predictors = [target_positions[0] - 1] + target_positions[:-1]
    labels[torch.tensor(predictors)] = frames[first_target:, 0]
    labels[target_positions[-1]] = layout.codec_eos
    return LaidOut(
        key=sample.key, text_ids=torch.tensor(text, dtype=torch.long), codec_ids=torch.tensor(codec, dtype=torch.long),
        frame_ids=torch.tensor(frame, dtype=torch.long), frames=frames, speaker_position=speaker_position,
        labels=labels, sub_positions=torch.tensor(predictors, dtype=torch.long),
        sub_frames=torch.arange(first_target, frames.shape[0], dtype=torch.long), xvector=xvector,
    )


def reference_collate(items: Sequence[LaidOut], pad_text_id: int, hidden_size: int) -> Batch:
    batch_size = len(items)
    longest = max(item.length for item in items)
    text_ids = torch.full((batch_size, longest), pad_text_id, dtype=torch.long)
    codec_ids = torch.full((batch_size, longest), -1, dtype=torch.long)
    frame_ids = torch.full((batch_size, longest), -1, dtype=torch.long)
    labels = torch.full((batch_size, longest), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, longest), dtype=torch.long)
    speaker_positions = torch.full((batch_size,), -1, dtype=torch.long)
    xvectors = torch.zeros((batch_size, hidden_size), dtype=torch.float32)
    any_xvector = False
    frames, sub_batch, sub_positions, sub_frames = [], [], [], []
    offset = 0
    for row, item in enumerate(items):
        n = item.length
        text_ids[row, :n] = item.text_ids
        codec_ids[row, :n] = item.codec_ids
        frame_ids[row, :n] = torch.where(item.frame_ids >= 0, item.frame_ids + offset, item.frame_ids)
        labels[row, :n] = item.labels
        attention_mask[row, :n] = 1
        speaker_positions[row] = item.speaker_position
        if item.xvector is not None:
            xvectors[row] = item.xvector
            any_xvector = True
        frames.append(item.frames)
        sub_batch.append(torch.full_like(item.sub_positions, row))
        sub_positions.append(item.sub_positions)
        sub_frames.append(item.sub_frames + offset)
        offset += item.frames.shape[0]
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(
        keys=[item.key for item in items], text_ids=text_ids, codec_ids=codec_ids, frame_ids=frame_ids,
        frames=torch.cat(frames, dim=0), attention_mask=attention_mask,
        position_ids=positions.unsqueeze(0).expand(3, -1, -1).contiguous(), labels=labels,
        speaker_positions=speaker_positions, xvectors=xvectors if any_xvector else None,
        sub_batch=torch.cat(sub_batch),
        sub_positions=torch.cat(sub_positions), sub_frames=torch.cat(sub_frames),
    )
