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

A sample is built from whole arrays (one segment per run of positions that share a rule), not position by position:
the data loader lays out every training sample, so this is on the hot path. tests/layout_reference.py keeps the
position-by-position version the arrays must equal exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .data.shard_format import codes_in_range
from .model_shapes import CODEBOOK_SIZE, LAYOUTS

IGNORE = -100


def target_prompt(text: str) -> str:
    """The string generate() tokenizes for a target text (its ids are then sliced: see `SequenceLayout._target_ids`)."""
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def reference_prompt(text: str) -> str:
    """The string generate() tokenizes for an ICL reference transcript (sliced in `SequenceLayout._reference_ids`)."""
    return f"<|im_start|>assistant\n{text}<|im_end|>\n"


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt string, as qwen_tts tokenizes it (no special tokens added)."""
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What stored prompt ids depend on: the tokenizer's full definition (vocabulary, merges, added tokens,
    normalisation) and the two prompt templates. Shards record it; ids made under another fingerprint are not used."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer serialises everything that decides its output
        serialised = json.loads(backend.to_str())
        # Padding and truncation are call-time state (set by whichever batch call came last), not what ids a text
        # gets without them: leave them out so the fingerprint does not depend on the tokenizer's history.
        serialised.pop("padding", None)
        serialised.pop("truncation", None)
        definition = json.dumps(serialised, sort_keys=True)
    else:
        definition = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())])
    digest = hashlib.sha256(definition.encode("utf-8"))
    digest.update((target_prompt("{text}") + reference_prompt("{text}")).encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass
class Sample:
    """One utterance as the layout needs it (codes come from the 12 Hz codec, [T, 16])."""

    key: str
    text: str
    codes: torch.Tensor | np.ndarray  # integer codes [T, 16] (the shard reader hands over int16 arrays)
    language: str = "auto"
    speaker: Optional[str] = None  # a named speaker row of talker_config.spk_id (custom voice)
    xvector: Optional[torch.Tensor | np.ndarray] = None  # speaker-encoder output [hidden] (voice clone)
    ref_text: Optional[str] = None  # ICL reference transcript (same speaker)
    ref_codes: Optional[torch.Tensor | np.ndarray] = None  # ICL reference codes [R, 16]
    # Token ids of target_prompt(text) / reference_prompt(ref_text), stored by `qwen-swe shards build` so the reader
    # need not tokenize; used only when `tokenizer_fingerprint` equals the layout's (otherwise the text is tokenized).
    prompt_ids: Optional[Sequence[int]] = None
    ref_prompt_ids: Optional[Sequence[int]] = None
    tokenizer_fingerprint: Optional[str] = None
    # True when the codes are known to lie in 0..CODEBOOK_SIZE-1 and the x-vector to be finite (the shard
    # reader's decode_sample checked them): the layout then skips those two whole-array scans, checking shapes only.
    checked: bool = False


@dataclass
class LaidOut:
    """Where every position of one sample gets its input from, plus its labels.

    Numpy arrays, not tensors: a sample is an intermediate on the way to a Batch, and numpy's per-call cost is a
    fraction of torch's for arrays this small (the loader lays out every training sample). Collate makes the
    tensors. The four per-position rows live in one [4, L] array so that collate moves them in one step.
    """

    key: str
    columns: np.ndarray  # int64 [4, L]: the rows text_ids, codec_ids, frame_ids, labels (see the properties)
    frames: np.ndarray  # integer [F, G] all frames this sample uses (ICL: reference frames, then target frames)
    speaker_position: int  # position whose codec channel is the x-vector, or -1
    first_target: int  # index into `frames` of target frame 0 (the frames from there on are the target's)
    xvector: Optional[np.ndarray] = None  # float32 [D]

    @property
    def length(self) -> int:
        return int(self.columns.shape[1])

    @property
    def text_ids(self) -> np.ndarray:  # [L] text token id on the text channel of each position
        return self.columns[0]

    @property
    def codec_ids(self) -> np.ndarray:  # [L] codec special row on the codec channel, or -1
        return self.columns[1]

    @property
    def frame_ids(self) -> np.ndarray:  # [L] index into `frames` whose summed embedding is the codec channel, or -1
        return self.columns[2]

    @property
    def labels(self) -> np.ndarray:  # [L] codebook-0 label predicted from each position, IGNORE where unsupervised
        return self.columns[3]

    @property
    def target_frames(self) -> int:
        return int(self.frames.shape[0]) - self.first_target

    @property
    def sub_positions(self) -> np.ndarray:
        """[N] position whose hidden state predicted codebook 0 of target frame n: the target frames fill the last
        N positions, and each is predicted from the position before it."""
        return np.arange(self.length - self.target_frames - 1, self.length - 1)

    @property
    def sub_frames(self) -> np.ndarray:  # [N] index into `frames` of target frame n
        return np.arange(self.first_target, self.frames.shape[0])


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
    sub_batch: torch.Tensor  # [N] batch row of each sub-talker frame
    sub_positions: torch.Tensor  # [N]
    sub_frames: torch.Tensor  # [N] index into `frames`
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for name, value in self.__dict__.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
            else:
                moved[name] = value
        return Batch(**moved)

    def __reduce__(self) -> tuple:
        """Pickle CPU tensors as numpy arrays, by value. DataLoader workers pickle every batch to the training
        process; a tensor would go through its own shared-memory segment (a file descriptor, mmap and bookkeeping
        each: a batch holds about a dozen small ones, and that cost more than building the batch), a small array
        is a few bytes copies."""
        fields = {}
        for name, value in self.__dict__.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad:
                value = _PickledArray(value.numpy())
            fields[name] = value
        return (_batch_from_fields, (fields,))

    @classmethod
    def empty(cls, extra: dict[str, Any]) -> "Batch":
        """A batch whose samples were all unusable; the trainer skips the step (on every rank) when it sees one."""
        none = torch.zeros((0, 0), dtype=torch.long)
        flat = torch.zeros((0,), dtype=torch.long)
        return cls(keys=[], text_ids=none, codec_ids=none, frame_ids=none, frames=torch.zeros((0, 16), dtype=torch.long),
                   attention_mask=none, position_ids=torch.zeros((3, 0, 0), dtype=torch.long), labels=none,
                   speaker_positions=flat, xvectors=None, sub_batch=flat, sub_positions=flat,
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


class _PickledArray:
    """A tensor's values in transit (see Batch.__reduce__)."""

    def __init__(self, array: np.ndarray):
        self.array = array


def _batch_from_fields(fields: dict[str, Any]) -> Batch:
    return Batch(**{name: torch.from_numpy(value.array) if isinstance(value, _PickledArray) else value
                    for name, value in fields.items()})


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
        self._tokenizer_fingerprint: Optional[str] = None
        self._prefixes: dict[tuple, tuple[np.ndarray, np.ndarray, int]] = {}

    # ----------------------------------------------------------------------------------------- tokenization
    @property
    def tokenizer_fingerprint(self) -> str:
        """`tokenizer_fingerprint(self.tokenizer)`, computed on first use (serialising a tokenizer takes ~1 s)."""
        if self._tokenizer_fingerprint is None:
            self._tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._tokenizer_fingerprint

    def _prompt_arrays(self, sample: Sample, reference: bool = False) -> np.ndarray:
        """The sample's prompt ids as int64: the stored ones when they were made by this tokenizer, else tokenized."""
        stored = sample.ref_prompt_ids if reference else sample.prompt_ids
        if stored is None or sample.tokenizer_fingerprint != self.tokenizer_fingerprint:
            text = sample.ref_text if reference else sample.text
            stored = prompt_ids(self.tokenizer, reference_prompt(text) if reference else target_prompt(text))
        return np.asarray(stored, dtype=np.int64)

    def _target_ids(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(role ids, text ids) sliced from target_prompt's ids as generate() slices them."""
        ids = self._prompt_arrays(sample)
        return ids[:3], ids[3:-5]

    def _reference_ids(self, sample: Sample) -> np.ndarray:
        """The reference transcript's ids sliced from reference_prompt's ids as generate() slices them."""
        return self._prompt_arrays(sample, reference=True)[3:-2]

    # ----------------------------------------------------------------------------------------- validation
    def _fail(self, sample: Sample, field_name: str, problem: str) -> ValueError:
        return ValueError(f"sample {sample.key!r}: field {field_name!r}: {problem}")

    def _check_codes(self, sample: Sample, codes: Any, field_name: str) -> np.ndarray:
        """The codes as a numpy integer array [frames, groups] (a view of a CPU tensor; int16 arrays stay int16)."""
        if isinstance(codes, torch.Tensor):
            codes = _numpy(codes)
        elif not isinstance(codes, np.ndarray):
            raise self._fail(sample, field_name, f"expected a tensor of codec codes, got {type(codes).__name__}")
        if codes.ndim != 2 or codes.shape[1] != self.num_code_groups or codes.shape[0] < 1:
            raise self._fail(
                sample, field_name,
                f"expected shape [frames>=1, {self.num_code_groups}], got {list(codes.shape)}; "
                "encode the audio with this model's 12 Hz speech tokenizer",
            )
        if codes.dtype.kind not in "iu":
            raise self._fail(sample, field_name, f"expected integer codes, got {codes.dtype}")
        if not sample.checked and not codes_in_range(codes):
            low, high = int(codes.min()), int(codes.max())
            raise self._fail(sample, field_name, f"codes must lie in 0..{CODEBOOK_SIZE - 1}, found {low}..{high}")
        return codes

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
        """Lay one sample out. Every position is (text id, codec row or -1, frame index or -1); the runs are:

        role ids | codec prefix (think tags, language) | speaker slot | tts_bos on codec pad | layout body, whose
        last `frames` positions are the target frames; the labels follow from that alone (see `_put_labels`).
        The four rows are written into one preallocated [4, L] array, segment by segment.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if not isinstance(sample.text, str) or not sample.text.strip():
            raise self._fail(sample, "text", "empty text; every sample needs a transcript")
        target = self._check_codes(sample, sample.codes, "codes")
        language_row = self._language_row(sample)
        role_ids, text_ids = self._target_ids(sample)
        if not text_ids.size:
            raise self._fail(sample, "text", "tokenizes to nothing")
        xvector = self._speaker_vector(sample)
        prefix, speaker_position = self._prefix(sample, role_ids, language_row, xvector)

        # The text the body carries: the target's (after the ICL reference's, for the ICL layouts), then tts_eos.
        if layout in ("icl", "icl_non_streaming"):
            reference = self._reference_codes(sample)
            frames, first_target = np.concatenate((reference, target)), reference.shape[0]
            prompt_text = np.concatenate((self._reference_ids(sample), text_ids, (self.tts_eos,)))
        else:
            frames, first_target = target, 0
            prompt_text = np.concatenate((text_ids, (self.tts_eos,)))
        all_text_first = layout in ("non_streaming", "icl_non_streaming")
        start = prefix.shape[1]
        bos = start + prompt_text.size if all_text_first else start  # the codec bos position, before the frames
        length = bos + 1 + frames.shape[0]
        if length > self.max_positions:
            raise self._fail(
                sample, "text",
                f"sequence of {length} positions exceeds the talker's limit of {self.max_positions}; "
                "shorten the text or the audio (or the ICL reference)",
            )
        columns = np.empty((4, length), dtype=np.int64)
        columns[:3, :start] = prefix
        text, codec, frame, labels = columns
        if all_text_first:  # all text on codec pad, then codec bos and the frames on tts_pad
            text[start:bos] = prompt_text
            text[bos:] = self.tts_pad
            codec[start:bos] = self.codec_pad
            frame[start:bos] = -1
        else:  # streaming: the text rides along from codec bos on, tts_pad once it runs out
            self._put_text(text, bos, prompt_text)
        codec[bos] = self.codec_bos
        # Every layout ends the same way: the codec bos position (no frame), then one position per frame, whose codec
        # channel is that frame's embedding (-1 here) and whose frame index counts up from 0.
        codec[bos + 1:] = -1
        frame[bos:] = np.arange(-1, length - bos - 1)
        self._put_labels(labels, target[:, 0])
        return LaidOut(key=sample.key, columns=columns, frames=frames, speaker_position=speaker_position,
                       first_target=first_target, xvector=xvector)

    def _prefix(self, sample: Sample, role_ids: np.ndarray, language_row: Optional[int],
                xvector: Optional[np.ndarray]) -> tuple[np.ndarray, int]:
        """([text, codec, frame] rows, speaker position) of the positions before the layout body; none of them
        holds a frame.

        Role ids (text only), then the codec prefix on tts_pad: think tags (+ language), the speaker slot (a named
        speaker row, or an empty codec channel the objective fills with the x-vector), then tts_bos
        on codec pad. The same few prefixes recur, so they are cached.
        """
        speaker_row = None
        if sample.speaker:
            name = sample.speaker.lower()
            if name not in self.speaker_ids:
                raise self._fail(
                    sample, "speaker",
                    f"unknown speaker {sample.speaker!r}; known: {', '.join(sorted(self.speaker_ids)) or 'none'}",
                )
            speaker_row = self.speaker_ids[name]
        slot = speaker_row is None and xvector is not None
        key = (tuple(role_ids.tolist()), language_row, speaker_row, slot)
        cached = self._prefixes.get(key)
        if cached is None:
            if language_row is None:
                rows = [self.codec_nothink, self.codec_think_bos, self.codec_think_eos]
            else:
                rows = [self.codec_think, self.codec_think_bos, language_row, self.codec_think_eos]
            if speaker_row is not None:
                rows.append(speaker_row)
            elif slot:
                rows.append(-1)
            text = list(key[0]) + [self.tts_pad] * len(rows) + [self.tts_bos]
            codec = [-1] * len(key[0]) + rows + [self.codec_pad]
            speaker_position = len(text) - 2 if slot else -1
            cached = (np.array([text, codec, [-1] * len(text)], dtype=np.int64), speaker_position)
            if len(self._prefixes) < 256:
                self._prefixes[key] = cached
        return cached

    def _speaker_vector(self, sample: Sample) -> Optional[np.ndarray]:
        """The sample's x-vector as float32 numpy [hidden], validated (None when it has none)."""
        if sample.xvector is None:
            return None
        vector = sample.xvector
        vector = _numpy(vector) if isinstance(vector, torch.Tensor) else np.asarray(vector)
        vector = vector.reshape(-1) if vector.ndim == 2 and vector.shape[0] == 1 else vector
        if vector.ndim != 1 or vector.shape[0] != self.hidden_size:
            raise self._fail(
                sample, "xvector",
                f"expected a speaker embedding of size {self.hidden_size} (the talker's hidden size), "
                f"got shape {list(vector.shape)}; was it made by another model size's speaker encoder?",
            )
        vector = vector.astype(np.float32, copy=False)
        if not sample.checked and not np.isfinite(vector).all():
            raise self._fail(sample, "xvector", "contains NaN or inf")
        if sample.speaker:
            raise self._fail(sample, "speaker", "give either a named speaker or an x-vector, not both")
        return vector

    def _reference_codes(self, sample: Sample) -> np.ndarray:
        """The ICL reference's codes, checked (the ICL layouts need its transcript and codes)."""
        if not sample.ref_text or not sample.ref_text.strip():
            raise self._fail(sample, "ref_text", "the ICL layout needs the reference utterance's transcript")
        if sample.ref_codes is None:
            raise self._fail(sample, "ref_codes", "the ICL layout needs the reference utterance's codec codes")
        return self._check_codes(sample, sample.ref_codes, "ref_codes")

    def _put_text(self, row: np.ndarray, start: int, ids: np.ndarray) -> None:
        """row[start:] = ids, cut to fit or padded with tts_pad (text may run out before the frames do)."""
        fitting = min(ids.size, row.size - start)
        row[start:start + fitting] = ids[:fitting]
        row[start + fitting:] = self.tts_pad

    def _put_labels(self, labels: np.ndarray, codebook0: np.ndarray) -> None:
        """The target frames are the last `len(codebook0)` positions: the position just before each target frame
        predicts its codebook 0 (the last prompt position predicts frame 0), and the position fed the last frame
        predicts EOS; nothing else is supervised."""
        first = labels.size - codebook0.shape[0]
        labels[:first - 1] = IGNORE
        labels[first - 1:-1] = codebook0
        labels[-1] = self.codec_eos

    # ----------------------------------------------------------------------------------------- batching
    def collate(self, items: Sequence[LaidOut]) -> Batch:
        return collate(items, pad_text_id=self.tts_pad, hidden_size=self.hidden_size)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a tensor's values (a copy only when it lives on another device)."""
    try:
        return tensor.numpy()  # the common case, a plain CPU tensor
    except (RuntimeError, TypeError):  # on a GPU, or part of an autograd graph
        return tensor.detach().cpu().numpy()


def collate(items: Sequence[LaidOut], pad_text_id: int, hidden_size: int) -> Batch:
    """Right-pad laid-out samples to the batch's longest one; concatenate their frames.

    Numpy throughout, tensors made once at the end: each sample's [4, L] rows are copied into its row of a padded
    [4, B, L] grid with one assignment; frame and sub-talker indices are computed for all samples at once.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    batch_size = len(items)
    lengths = [item.columns.shape[1] for item in items]
    grid = np.empty((4, batch_size, max(lengths)), dtype=np.int64)
    grid[:] = np.array([pad_text_id, -1, -1, IGNORE])[:, None, None]
    for row, (item, length) in enumerate(zip(items, lengths)):
        grid[:, row, :length] = item.columns
    lengths = np.array(lengths)
    real = np.arange(grid.shape[2]) < lengths[:, None]
    frame_counts = np.array([item.frames.shape[0] for item in items])
    first_targets = np.array([item.first_target for item in items])
    frame_offsets = np.cumsum(frame_counts) - frame_counts  # where each sample's frames start in `frames`
    text_ids, codec_ids, frame_ids, labels = grid
    frame_ids += np.where(frame_ids >= 0, frame_offsets[:, None], 0)
    # Sub-talker steps: target frame n of sample i is frames[offset_i + first_target_i + n], and the position
    # predicting its codebook 0 is length_i - count_i - 1 + n (the target frames fill each sample's last positions).
    counts = frame_counts - first_targets
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    with_xvector = [row for row, item in enumerate(items) if item.xvector is not None]
    xvectors = None
    if with_xvector:
        xvectors = np.zeros((batch_size, hidden_size), dtype=np.float32)
        xvectors[with_xvector] = np.stack([items[row].xvector for row in with_xvector])
    # Positions count real tokens only, as generate() derives them from the attention mask: with right padding
    # that is the column index, held at the last real position over the padding.
    positions = np.minimum(np.arange(grid.shape[2]), lengths[:, None] - 1)
    tensor = torch.from_numpy
    return Batch(
        keys=[item.key for item in items],
        text_ids=tensor(text_ids),
        codec_ids=tensor(codec_ids),
        frame_ids=tensor(frame_ids),
        frames=tensor(np.concatenate([item.frames for item in items], dtype=np.int64)),
        attention_mask=tensor(real.astype(np.int64)),
        position_ids=tensor(np.repeat(positions[None], 3, axis=0)),
        labels=tensor(labels),
        speaker_positions=tensor(np.array([item.speaker_position for item in items], dtype=np.int64)),
        xvectors=None if xvectors is None else tensor(xvectors),
        sub_batch=tensor(np.repeat(np.arange(batch_size), counts)),
        sub_positions=tensor(step + np.repeat(lengths - counts - 1, counts)),
        sub_frames=tensor(step + np.repeat(frame_offsets + first_targets, counts)),
    )
