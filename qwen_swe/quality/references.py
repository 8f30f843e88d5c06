"""Reference voices for synthesis metrics, taken from the held-out (eval) split of a shard folder.

Shards carry codes, x-vectors and text but no audio. For each held-out speaker (sorted by name, the first N) the
longest clip is the reference: its stored x-vector conditions x-vector cloning, its codes and transcript condition
ICL cloning, and its codes decoded with the model's own codec give the reference waveform that speaker similarity
and the speaking rate are measured on. Decoding both sides through the same codec means the codec's own colouring
does not count against the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .synth import FRAMES_PER_SECOND, Voice


@dataclass
class Reference:
    speaker: str
    key: str
    text: str
    codes: Any  # torch tensor [frames, 16]
    xvector: Any  # torch tensor [hidden]
    wav: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return float(self.codes.shape[0]) / FRAMES_PER_SECOND

    def voice(self, mode: str) -> Voice:
        return Voice(mode=mode, label=self.speaker, ref_audio=(self.wav, self.sample_rate), ref_text=self.text,
                     xvector=self.xvector, ref_codes=self.codes if mode == "icl" else None)


def spoken_characters(text: str) -> int:
    """Letters and digits: what takes time to say (spaces and punctuation mostly do not)."""
    return sum(ch.isalnum() for ch in text)


def seconds_per_character(reference: Reference) -> float:
    return reference.seconds / max(1, spoken_characters(reference.text))


def heldout_references(wrapper: Any, shards: str | Path, split: str = "eval", speakers: int = 4) -> list[Reference]:
    """One reference per held-out speaker (the first `speakers` by name; 0 = all)."""
    import torch

    from ..data.shard_format import decode_sample
    from ..data.stream import ShardIndex, _MemberReader

    index = ShardIndex(shards, split)
    reader = _MemberReader()
    references = []
    try:
        # Only each sample's small JSON member is read to learn its speaker; lengths come from the entry lists.
        longest: dict[str, tuple[int, str, Any, dict]] = {}
        for shard in index.shards:
            for entry in sorted(shard.entries, key=lambda e: e["key"]):
                offset, size = entry["members"]["json"]
                meta = json.loads(reader.read(shard.path, offset, size).decode("utf-8"))
                speaker = str(meta.get("speaker") or entry["key"])
                frames = int(entry.get("frames") or 0)
                if speaker not in longest or frames > longest[speaker][0]:
                    longest[speaker] = (frames, entry["key"], shard, entry)
        names = sorted(longest)[:speakers] if speakers > 0 else sorted(longest)
        for name in names:
            _, key, shard, entry = longest[name]
            members = {member: reader.read(shard.path, offset, size)
                       for member, (offset, size) in entry["members"].items()}
            sample = decode_sample(key, members, index.xvector_dim)
            codes = torch.from_numpy(sample.codes.astype(np.int64))
            wavs, rate = wrapper.model.speech_tokenizer.decode([{"audio_codes": codes}])
            references.append(Reference(speaker=name, key=key, text=sample.text, codes=codes,
                                        xvector=torch.from_numpy(sample.xvector), wav=np.asarray(wavs[0], np.float32),
                                        sample_rate=int(rate)))
    finally:
        reader.close()
    return references
