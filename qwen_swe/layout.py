"""The sequence layout: the one place that knows where every token of a training sample goes.

`Qwen3TTSForConditionalGeneration.generate` (qwen_tts 0.1.1) builds the talker's input from two channels that are
added position by position:

- the text channel: a text token id, embedded by `talker.model.text_embedding` and then `talker.text_projection`;
- the codec channel: nothing (role tokens), a codec special row (think/language/pad/bos...), a speaker x-vector, or a
  whole codec frame (sum of the codebook-0 row of the talker and the codebook 1..15 rows of the code predictor).

A laid-out sample describes every position by (text id, codec special id or -1, frame index or -1, speaker slot) and
carries the labels. The objective turns that description into embeddings with the model's own modules, so the
embeddings training builds are the embeddings inference feeds (tests/test_parity.py proves it with hooks).

Layouts (named as inference uses them):
- ``non_streaming``: all target text first (codec channel = pad), tts_eos, then frames on tts_pad.
  `generate_custom_voice` default.
- ``streaming``: the first text token rides on codec bos, the rest of the text (then tts_eos) rides on the first
  frames, later frames on tts_pad. `generate_voice_clone` default without a reference transcript (x-vector only).
- ``icl``: voice-cloning prompt, streaming: reference text + target text (+ tts_eos) rides on [bos, reference frames],
  whatever text is left rides on the target frames. `generate_voice_clone` default with a reference transcript.
- ``icl_non_streaming``: the ICL prompt with all text first.

Labels: each position's codebook-0 label is the NEXT frame (one shift, nothing shifted again later); the position
fed the last target frame is labelled EOS. The sub-talker of target frame t is fed the hidden state of the position
whose label is frame t, i.e. the position that predicted its codebook 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

LAYOUTS = ("non_streaming", "streaming", "icl", "icl_non_streaming")
IGNORE = -100
NUM_CODEBOOK_ENTRIES = 2048  # codes 0..2047 of every codebook; codec rows above are specials


@dataclass
class Sample:
    """One utterance as the layout needs it (codes come from the 12 Hz codec, [T, 16])."""

    key: str
    text: str
    codes: torch.Tensor
    language: str = "auto"
    speaker: Optional[str] = None  # a named speaker row of talker_config.spk_id (custom voice)
    xvector: Optional[torch.Tensor] = None  # speaker-encoder output [hidden] (voice clone)
    speaker_mel: Optional[torch.Tensor] = None  # [frames, 128] mel of a reference; encoded in the objective
    ref_text: Optional[str] = None  # ICL reference transcript (same speaker)
    ref_codes: Optional[torch.Tensor] = None  # ICL reference codes [R, 16]


@dataclass
class LaidOut:
    """Where every position of one sample gets its input from, plus its labels."""

    key: str
    text_ids: torch.Tensor  # [L] text token id on the text channel of each position
    codec_ids: torch.Tensor  # [L] codec special row on the codec channel, or -1
    frame_ids: torch.Tensor  # [L] index into `frames` whose summed embedding is the codec channel, or -1
    frames: torch.Tensor  # [F, G] all frames this sample uses (ICL: reference frames, then target frames)
    speaker_position: int  # position whose codec channel is the x-vector / mel-derived embedding, or -1
    labels: torch.Tensor  # [L] codebook-0 label predicted from each position, IGNORE where unsupervised
    sub_positions: torch.Tensor  # [N] position whose hidden state predicted codebook 0 of target frame n
    sub_frames: torch.Tensor  # [N] index into `frames` of target frame n
    xvector: Optional[torch.Tensor] = None
    speaker_mel: Optional[torch.Tensor] = None

    @property
    def length(self) -> int:
        return int(self.text_ids.shape[0])


@dataclass
class Batch:
    """Right-padded to the longest sample in the batch and nothing more."""

    keys: list[str]
    text_ids: torch.Tensor  # [B, L]
    codec_ids: torch.Tensor  # [B, L]
    frame_ids: torch.Tensor  # [B, L] index into `frames` (all samples' frames concatenated), or -1
    frames: torch.Tensor  # [F, G]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [3, B, L] (the talker's multimodal rope wants three identical rows)
    labels: torch.Tensor  # [B, L]
    speaker_positions: torch.Tensor  # [B] or -1
    xvectors: Optional[torch.Tensor]  # [B, D] (zeros where a sample has none)
    speaker_mels: list[Optional[torch.Tensor]]
    sub_batch: torch.Tensor  # [N] batch row of each sub-talker frame
    sub_positions: torch.Tensor  # [N]
    sub_frames: torch.Tensor  # [N] index into `frames`
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for name, value in self.__dict__.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
            elif name == "speaker_mels":
                moved[name] = [m.to(device) if m is not None else None for m in value]
            else:
                moved[name] = value
        return Batch(**moved)

    @classmethod
    def empty(cls, extra: dict[str, Any]) -> "Batch":
        """A batch whose samples were all unusable; the trainer skips the step (on every rank) when it sees one."""
        none = torch.zeros((0, 0), dtype=torch.long)
        flat = torch.zeros((0,), dtype=torch.long)
        return cls(keys=[], text_ids=none, codec_ids=none, frame_ids=none, frames=torch.zeros((0, 16), dtype=torch.long),
                   attention_mask=none, position_ids=torch.zeros((3, 0, 0), dtype=torch.long), labels=none,
                   speaker_positions=flat, xvectors=None, speaker_mels=[], sub_batch=flat, sub_positions=flat,
                   sub_frames=flat, extra=dict(extra))

    @property
    def is_empty(self) -> bool:
        return not self.keys

    @property
    def real_positions(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_positions(self) -> int:
        return int(self.attention_mask.numel())


class SequenceLayout:
    """Builds laid-out samples for one model config and text tokenizer.

    `config` is a `Qwen3TTSConfig` (or anything with the same attributes); `tokenizer` is the model folder's text
    tokenizer. Text is tokenized exactly like qwen_tts does it: the whole chat-formatted string, then sliced.
    """

    def __init__(self, config: Any, tokenizer: Any):
        self.tokenizer = tokenizer
        talker = config.talker_config
        self.hidden_size = int(talker.hidden_size)
        self.num_code_groups = int(talker.num_code_groups)
        self.max_positions = int(talker.max_position_embeddings)
        self.codec_pad = int(talker.codec_pad_id)
        self.codec_bos = int(talker.codec_bos_id)
        self.codec_eos = int(talker.codec_eos_token_id)
        self.codec_think = int(talker.codec_think_id)
        self.codec_nothink = int(talker.codec_nothink_id)
        self.codec_think_bos = int(talker.codec_think_bos_id)
        self.codec_think_eos = int(talker.codec_think_eos_id)
        self.language_ids = {k.lower(): int(v) for k, v in dict(talker.codec_language_id).items()}
        self.speaker_ids = {k.lower(): int(v) for k, v in dict(talker.spk_id or {}).items()}
        self.speaker_dialects = {k.lower(): v for k, v in dict(talker.spk_is_dialect or {}).items()}
        self.tts_pad = int(config.tts_pad_token_id)
        self.tts_bos = int(config.tts_bos_token_id)
        self.tts_eos = int(config.tts_eos_token_id)

    # ----------------------------------------------------------------------------------------- tokenization
    def target_text_ids(self, text: str) -> tuple[list[int], list[int]]:
        """(role ids, text ids) exactly as generate() slices `<|im_start|>assistant\\n{text}<|im_end|>\\n...`."""
        ids = self._encode(f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n")
        return ids[:3], ids[3:-5]

    def reference_text_ids(self, text: str) -> list[int]:
        """Reference transcript ids as generate() slices `<|im_start|>assistant\\n{ref}<|im_end|>\\n`."""
        return self._encode(f"<|im_start|>assistant\n{text}<|im_end|>\n")[3:-2]

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------------------------- validation
    def _fail(self, sample: Sample, field_name: str, problem: str) -> ValueError:
        return ValueError(f"sample {sample.key!r}: field {field_name!r}: {problem}")

    def _check_codes(self, sample: Sample, codes: Any, field_name: str) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise self._fail(sample, field_name, f"expected a tensor of codec codes, got {type(codes).__name__}")
        if codes.dim() != 2 or codes.shape[1] != self.num_code_groups or codes.shape[0] < 1:
            raise self._fail(
                sample, field_name,
                f"expected shape [frames>=1, {self.num_code_groups}], got {list(codes.shape)}; "
                "encode the audio with this model's 12 Hz speech tokenizer",
            )
        if codes.dtype.is_floating_point:
            raise self._fail(sample, field_name, f"expected integer codes, got {codes.dtype}")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= NUM_CODEBOOK_ENTRIES:
            raise self._fail(sample, field_name, f"codes must lie in 0..{NUM_CODEBOOK_ENTRIES - 1}, found {low}..{high}")
        return codes.long()

    def _language_row(self, sample: Sample) -> Optional[int]:
        language = (sample.language or "").lower()
        if not language:
            raise self._fail(sample, "language", "empty; use 'auto' or one of " + ", ".join(sorted(self.language_ids)))
        row = None
        if language != "auto":
            if language not in self.language_ids:
                raise self._fail(
                    sample, "language",
                    f"unknown language {sample.language!r}; this model knows auto, "
                    + ", ".join(sorted(self.language_ids))
                    + " (register swedish with `qwen-swe add-language` first)",
                )
            row = self.language_ids[language]
        # generate() swaps in the dialect row for dialect speakers under chinese/auto; do the same.
        speaker = (sample.speaker or "").lower()
        if speaker and language in ("chinese", "auto") and self.speaker_dialects.get(speaker, False) is not False:
            row = self.language_ids[self.speaker_dialects[speaker]]
        return row

    # ----------------------------------------------------------------------------------------- building
    def build(self, sample: Sample, layout: str) -> LaidOut:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if not isinstance(sample.text, str) or not sample.text.strip():
            raise self._fail(sample, "text", "empty text; every sample needs a transcript")
        target = self._check_codes(sample, sample.codes, "codes")
        language_row = self._language_row(sample)
        role_ids, text_ids = self.target_text_ids(sample.text)
        if not text_ids:
            raise self._fail(sample, "text", "tokenizes to nothing")

        text: list[int] = []
        codec: list[int] = []
        frame: list[int] = []

        def put(text_id: int, codec_id: int = -1, frame_id: int = -1) -> None:
            text.append(text_id)
            codec.append(codec_id)
            frame.append(frame_id)

        # <|im_start|>assistant\n : text only.
        for token in role_ids:
            put(token)
        # Codec prefix: think tags (+ language), speaker slot, pad; text channel tts_pad..., tts_bos on the pad.
        if language_row is None:
            prefix = [self.codec_nothink, self.codec_think_bos, self.codec_think_eos]
        else:
            prefix = [self.codec_think, self.codec_think_bos, language_row, self.codec_think_eos]
        for row in prefix:
            put(self.tts_pad, row)
        speaker_position = -1
        xvector = self._speaker_vector(sample)
        if sample.speaker:
            name = sample.speaker.lower()
            if name not in self.speaker_ids:
                raise self._fail(
                    sample, "speaker",
                    f"unknown speaker {sample.speaker!r}; known: {', '.join(sorted(self.speaker_ids)) or 'none'}",
                )
            put(self.tts_pad, self.speaker_ids[name])
        elif xvector is not None or sample.speaker_mel is not None:
            speaker_position = len(text)
            put(self.tts_pad)  # codec channel filled with the speaker embedding by the objective
        put(self.tts_bos, self.codec_pad)

        if layout in ("icl", "icl_non_streaming"):
            frames, first_target = self._icl(sample, layout, text_ids, target, put)
        else:
            frames, first_target = target, 0
            if layout == "non_streaming":
                for token in text_ids:
                    put(token, self.codec_pad)
                put(self.tts_eos, self.codec_pad)
                put(self.tts_pad, self.codec_bos)
                trailing: list[int] = []
            else:
                put(text_ids[0], self.codec_bos)
                trailing = text_ids[1:] + [self.tts_eos]
            self._target_frames(target.shape[0], 0, trailing, put)

        labels, sub_positions, sub_frames = self._labels(len(text), frame, frames, first_target)
        if len(text) > self.max_positions:
            raise self._fail(
                sample, "text",
                f"sequence of {len(text)} positions exceeds the talker's limit of {self.max_positions}; "
                "shorten the text or the audio (or the ICL reference)",
            )
        return LaidOut(
            key=sample.key,
            text_ids=torch.tensor(text, dtype=torch.long),
            codec_ids=torch.tensor(codec, dtype=torch.long),
            frame_ids=torch.tensor(frame, dtype=torch.long),
            frames=frames,
            speaker_position=speaker_position,
            labels=labels,
            sub_positions=sub_positions,
            sub_frames=sub_frames,
            xvector=xvector,
            speaker_mel=sample.speaker_mel if xvector is None else None,
        )

    def _speaker_vector(self, sample: Sample) -> Optional[torch.Tensor]:
        if sample.xvector is None:
            return None
        vector = sample.xvector
        if not isinstance(vector, torch.Tensor):
            vector = torch.as_tensor(vector)
        vector = vector.reshape(-1) if vector.dim() == 2 and vector.shape[0] == 1 else vector
        if vector.dim() != 1 or vector.shape[0] != self.hidden_size:
            raise self._fail(
                sample, "xvector",
                f"expected a speaker embedding of size {self.hidden_size} (the talker's hidden size), "
                f"got shape {list(vector.shape)}; was it made by another model size's speaker encoder?",
            )
        if not torch.isfinite(vector).all():
            raise self._fail(sample, "xvector", "contains NaN or inf")
        if sample.speaker:
            raise self._fail(sample, "speaker", "give either a named speaker or an x-vector, not both")
        return vector.float()

    def _icl(self, sample: Sample, layout: str, text_ids: list[int], target: torch.Tensor, put) -> tuple:
        if not sample.ref_text or not sample.ref_text.strip():
            raise self._fail(sample, "ref_text", "the ICL layout needs the reference utterance's transcript")
        if sample.ref_codes is None:
            raise self._fail(sample, "ref_codes", "the ICL layout needs the reference utterance's codec codes")
        reference = self._check_codes(sample, sample.ref_codes, "ref_codes")
        frames = torch.cat([reference, target], dim=0)
        prompt_text = self.reference_text_ids(sample.ref_text) + text_ids + [self.tts_eos]
        # codec side of the prompt: bos, then the reference frames
        prompt_codec = [(self.codec_bos, -1)] + [(-1, i) for i in range(reference.shape[0])]
        if layout == "icl_non_streaming":
            for token in prompt_text:
                put(token, self.codec_pad)
            for row, frame_id in prompt_codec:
                put(self.tts_pad, row, frame_id)
            trailing: list[int] = []
        else:
            overlap = min(len(prompt_text), len(prompt_codec))
            for i, (row, frame_id) in enumerate(prompt_codec):
                put(prompt_text[i] if i < overlap else self.tts_pad, row, frame_id)
            trailing = prompt_text[len(prompt_codec):]
        self._target_frames(target.shape[0], reference.shape[0], trailing, put)
        return frames, reference.shape[0]

    def _target_frames(self, count: int, offset: int, trailing: list[int], put) -> None:
        for t in range(count):
            put(trailing[t] if t < len(trailing) else self.tts_pad, -1, offset + t)

    def _labels(self, length: int, frame: list[int], frames: torch.Tensor, first_target: int):
        labels = torch.full((length,), IGNORE, dtype=torch.long)
        target_positions = [p for p, f in enumerate(frame) if f >= first_target]
        # The position just before target frame 0 (the last prompt position) predicts its codebook 0.
        predictors = [target_positions[0] - 1] + target_positions[:-1]
        sub_frames = torch.arange(first_target, frames.shape[0], dtype=torch.long)
        labels[torch.tensor(predictors)] = frames[first_target:, 0]
        labels[target_positions[-1]] = self.codec_eos
        return labels, torch.tensor(predictors, dtype=torch.long), sub_frames

    # ----------------------------------------------------------------------------------------- batching
    def collate(self, items: Sequence[LaidOut]) -> Batch:
        return collate(items, pad_text_id=self.tts_pad, hidden_size=self.hidden_size)


def collate(items: Sequence[LaidOut], pad_text_id: int, hidden_size: int) -> Batch:
    """Right-pad laid-out samples to the batch's longest one; concatenate their frames."""
    if not items:
        raise ValueError("cannot collate an empty batch")
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
    # Positions count real tokens only, as generate() derives them from the attention mask.
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(
        keys=[item.key for item in items],
        text_ids=text_ids,
        codec_ids=codec_ids,
        frame_ids=frame_ids,
        frames=torch.cat(frames, dim=0),
        attention_mask=attention_mask,
        position_ids=positions.unsqueeze(0).expand(3, -1, -1).contiguous(),
        labels=labels,
        speaker_positions=speaker_positions,
        xvectors=xvectors if any_xvector else None,
        speaker_mels=[item.speaker_mel for item in items],
        sub_batch=torch.cat(sub_batch),
        sub_positions=torch.cat(sub_positions),
        sub_frames=torch.cat(sub_frames),
    )
