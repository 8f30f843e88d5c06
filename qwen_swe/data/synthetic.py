"""Synthetic shard folders in the qwen-swe format, for tests, demos and benchmarks: random codes and x-vectors, any
number of samples, no audio and no model.

What they hold is random (codes drawn uniformly from the codebook, Gaussian x-vectors), but the folder is laid out
exactly as `qwen-swe shards build` lays it out (index.json, `<split>/<split>-NNNNNN.tar` with `<key>.<field>`
members, `.entries.json` offset lists; see shard_format), so the reader, the trainer and the tools read it like a
real build. The tar headers differ from a real build's (plain tarfile, mode 0o644), which nothing reads.

- `synthetic_shards(root, shards, per_shard, ...)`: train (and optionally eval) splits of log-normal lengths, with
  speakers, languages and optional ICL references: what the tests train and evaluate on;
- `write_split` + `write_index`: the writing half on its own, for callers that draw their own samples (the step
  benchmark draws RixVox-like lengths);
- `write_tar`: one tar of already encoded samples, returning its entry list.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..model_shapes import CODEBOOK_SIZE, NUM_CODE_GROUPS
from .shard_format import FORMAT, INDEX_NAME, encode_sample, scan_tar_entries, shard_stem

TEXTS = ["Hej, välkommen till Göteborg!", "Vi åker till Malmö i morgon.", "Älgen stod stilla i skogen.",
         "Mormor bakade kanelbullar.", "Det regnade hela natten."]


@dataclass
class SyntheticSample:
    """One encoded sample (`shard_format.encode_sample`'s members) and the lengths its entry records."""

    key: str
    members: dict[str, bytes]
    frames: int
    ref_frames: int = 0


def write_tar(path: Path, samples: Sequence[tuple[str, dict[str, bytes]]]) -> list[dict[str, Any]]:
    """A tar with members <key>.<field>; returns the entry list (offsets of every member, scanned from the tar)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return scan_tar_entries(path)


def write_split(root: Path, split: str, shards: Iterable[Sequence[SyntheticSample]]) -> list[dict[str, Any]]:
    """Write each group of samples as one shard of `split` (tar + entry list) under `root`; return the index records.

    `shards` may be a generator: each shard is written before the next is drawn.
    """
    (root / split).mkdir(parents=True, exist_ok=True)
    records = []
    for number, samples in enumerate(shards):
        tar_path = root / f"{shard_stem(split, number)}.tar"
        entries = write_tar(tar_path, [(s.key, s.members) for s in samples])
        lengths = {s.key: (s.frames, s.ref_frames) for s in samples}
        for entry in entries:
            entry["frames"], entry["ref_frames"] = lengths[entry["key"]]
        entries_path = tar_path.with_suffix(".entries.json")
        entries_path.write_text(json.dumps(entries))
        records.append({"path": f"{split}/{tar_path.name}", "entries": f"{split}/{entries_path.name}",
                        "samples": len(samples), "frames": sum(s.frames for s in samples),
                        "bytes": tar_path.stat().st_size, "sha256": hashlib.sha256(tar_path.read_bytes()).hexdigest()})
    return records


def write_index(root: Path, xvector_dim: int, splits: dict[str, list[dict[str, Any]]]) -> Path:
    """index.json for the split records `write_split` returned; returns `root`."""
    index = {"format": FORMAT, "xvector_dim": xvector_dim, "num_code_groups": NUM_CODE_GROUPS, "splits": splits}
    (root / INDEX_NAME).write_text(json.dumps(index))
    return root


def random_codes(rng: np.random.Generator, frames: int) -> np.ndarray:
    """[frames, NUM_CODE_GROUPS] codes drawn uniformly from the codebook."""
    return rng.integers(0, CODEBOOK_SIZE, (frames, NUM_CODE_GROUPS))


def synthetic_shards(root: Path, shards: int, per_shard: int, hidden: int = 64, seed: int = 0,
                     eval_samples: int = 0, with_reference: bool = True,
                     speakers: Sequence[str] = ("spk0", "spk1", "spk2"), prefix: str = "",
                     mean_frames: float = 20) -> Path:
    """A shard folder at `root`: `shards` train shards of `per_shard` samples (lengths log-normal around
    `mean_frames`, 3..4 x mean_frames) and, with `eval_samples`, one eval shard; x-vectors of size `hidden`; speakers
    taken in turn; each sample gets random ICL reference codes unless `with_reference` is False; keys start with
    `prefix` (so that several folders can be told apart in one run). Deterministic for a given `seed`."""
    rng = np.random.default_rng(seed)
    plan = {"train": [per_shard] * shards, "eval": [eval_samples] if eval_samples else []}

    def split_shards(split: str, counts: list[int]) -> Iterable[list[SyntheticSample]]:
        for shard_id, count in enumerate(counts):
            samples = []
            for i in range(count):
                key = f"{prefix}{split}{shard_id:03d}x{i:04d}"
                frames = int(np.clip(rng.lognormal(np.log(mean_frames), 0.5), 3, 4 * mean_frames))
                ref = random_codes(rng, int(rng.integers(3, 10))) if with_reference else None
                meta = {"text": TEXTS[i % len(TEXTS)], "speaker": speakers[i % len(speakers)], "language": "swedish",
                        "frames": frames, "reference": {"key": "other", "text": TEXTS[(i + 1) % len(TEXTS)]}}
                members = encode_sample(key, meta, random_codes(rng, frames), rng.standard_normal(hidden), ref)
                samples.append(SyntheticSample(key, members, frames, 0 if ref is None else len(ref)))
            yield samples

    return write_index(root, hidden, {split: write_split(root, split, split_shards(split, counts))
                                      for split, counts in plan.items()})
