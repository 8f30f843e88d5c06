"""Reference voices for synthesis metrics, taken from a shard folder.

Shards carry codes, x-vectors and text but no audio. For each held-out speaker (sorted by name, those absent from
the train split first, the first N) the longest clip of the eval split is the reference: its stored x-vector
conditions x-vector cloning, its codes and transcript condition ICL cloning, and its codes decoded with the model's
own codec give the reference waveform that speaker similarity and the speaking rate are measured on. Decoding both
sides through the same codec means the codec's own colouring does not count against the model. A named voice of a
custom-voice export is compared with the longest train-split clip of the speaker it was made from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..model_shapes import FRAME_RATE
from .synth import Voice


@dataclass
class Reference:
    speaker: str
    key: str
    text: str
    codes: Any  # torch tensor [frames, 16]
    xvector: Any  # torch tensor [hidden]
    codec: Any = field(default=None, repr=False)  # the model's speech tokenizer, which decodes `codes`
    _audio: Optional[tuple[np.ndarray, int]] = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return float(self.codes.shape[0]) / FRAME_RATE

    def audio(self) -> tuple[np.ndarray, int]:
        """The clip as (waveform, rate), decoded once on first use (pace and cloning need only codes and x-vector)."""
        if self._audio is None:
            wavs, rate = self.codec.decode([{"audio_codes": self.codes}])
            self._audio = (np.asarray(wavs[0], dtype=np.float32), int(rate))
        return self._audio

    def voice(self, mode: str) -> Voice:
        return Voice(mode=mode, label=self.speaker, ref_text=self.text, xvector=self.xvector,
                     ref_codes=self.codes if mode == "icl" else None)


def spoken_characters(text: str) -> int:
    """Letters and digits: what takes time to say (spaces and punctuation mostly do not)."""
    return sum(ch.isalnum() for ch in text)


def seconds_per_character(reference: Reference) -> float:
    return reference.seconds / max(1, spoken_characters(reference.text))


def _split_speakers(shards: str | Path, split: str) -> list[str]:
    """Speakers of a split as index.json's build statistics list them (empty when the index has none)."""
    from ..data.shard_format import INDEX_NAME

    index = json.loads((Path(shards) / INDEX_NAME).read_text(encoding="utf-8"))
    return list(((index.get("stats") or {}).get(split) or {}).get("speakers") or {})


def heldout_references(wrapper: Any, shards: str | Path, split: str = "eval", speakers: int = 4) -> list[Reference]:
    """One reference per held-out speaker (the first `speakers` by name, speakers absent from the train split
    first; 0 = all)."""
    with _SplitClips(shards, split) as clips:
        # Speakers the model never trained on first: an eval split may also hold utterances of training speakers.
        trained = set(_split_speakers(shards, "train"))
        ranked = sorted(clips.longest, key=lambda name: (name in trained, name))
        return [clips.reference(wrapper, name) for name in (ranked[:speakers] if speakers > 0 else ranked)]


def speaker_references(wrapper: Any, shards: str | Path, names: Sequence[str],
                       split: str = "train") -> dict[str, Reference]:
    """Voice name -> the longest clip of the speaker of that name (case aside) in `split`: what a named voice of a
    custom-voice export was trained to sound like. Names without clips in the split are left out."""
    with _SplitClips(shards, split) as clips:
        by_lower = {speaker.lower(): speaker for speaker in clips.longest}
        return {name: clips.reference(wrapper, by_lower[name.lower()]) for name in names
                if name.lower() in by_lower}


class _SplitClips:
    """The longest clip of every speaker in one split of a shard folder, decoded into a Reference on request.

    Only each sample's small JSON member is read to learn its speaker; lengths come from the entry lists.
    """

    def __init__(self, shards: str | Path, split: str):
        from ..data.shard_format import ShardReader
        from ..data.stream import ShardIndex

        self.index = ShardIndex(shards, split)
        self.reader = ShardReader()
        self.longest: dict[str, tuple[int, Any, dict]] = {}  # speaker -> (frames, shard, entry)
        for shard in self.index.shards:
            for entry in sorted(shard.entries, key=lambda e: e["key"]):
                speaker = str(self.reader.read_meta(shard.path, entry).get("speaker") or entry["key"])
                frames = int(entry.get("frames") or 0)
                if speaker not in self.longest or frames > self.longest[speaker][0]:
                    self.longest[speaker] = (frames, shard, entry)

    def reference(self, wrapper: Any, speaker: str) -> Reference:
        import torch

        _, shard, entry = self.longest[speaker]
        sample = self.reader.read_sample(shard.path, entry, self.index.xvector_dim)
        return Reference(speaker=speaker, key=entry["key"], text=sample.text,
                         codes=torch.from_numpy(sample.codes.astype(np.int64)),
                         xvector=torch.tensor(sample.xvector),  # a copy (decoded arrays view the bytes)
                         codec=wrapper.model.speech_tokenizer)

    def __enter__(self) -> "_SplitClips":
        return self

    def __exit__(self, *_: Any) -> None:
        self.reader.close()
