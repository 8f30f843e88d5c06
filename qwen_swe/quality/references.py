"""Reference voices for synthesis metrics, taken from the held-out (eval) split of a shard folder.

Shards carry codes, x-vectors and text but no audio. For each held-out speaker (sorted by name, the first N) the
longest clip is the reference: its stored x-vector conditions x-vector cloning, its codes and transcript condition
ICL cloning, and its codes decoded with the model's own codec give the reference waveform that speaker similarity
and the speaking rate are measured on. Decoding both sides through the same codec means the codec's own colouring
does not count against the model.
"""

from __future__ import annotations

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
    best: dict[str, tuple[int, str, Any]] = {}
    try:
        for shard in index.shards:
            for entry in sorted(shard.entries, key=lambda e: e["key"]):
                members = {name: reader.read(shard.path, offset, size)
                           for name, (offset, size) in entry["members"].items()}
                sample = decode_sample(entry["key"], members, index.xvector_dim)
                speaker = str(sample.meta.get("speaker") or sample.key)
                frames = int(sample.codes.shape[0])
                if speaker not in best or frames > best[speaker][0]:
                    best[speaker] = (frames, sample.key, sample)
    finally:
        reader.close()
    names = sorted(best)[:speakers] if speakers > 0 else sorted(best)
    references = []
    for name in names:
        sample = best[name][2]
        codes = torch.from_numpy(sample.codes.astype(np.int64))
        wavs, rate = wrapper.model.speech_tokenizer.decode([{"audio_codes": codes}])
        references.append(Reference(speaker=name, key=sample.key, text=sample.text, codes=codes,
                                    xvector=torch.from_numpy(sample.xvector), wav=np.asarray(wavs[0], np.float32),
                                    sample_rate=int(rate)))
    return references
