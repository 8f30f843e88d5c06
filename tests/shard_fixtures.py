"""Synthetic shard folders in the qwen-swe format: random codes and x-vectors, many samples, no audio."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Sequence
from pathlib import Path

import numpy as np

from qwen_swe.data.shard_format import FORMAT, INDEX_NAME, encode_sample

TEXTS = ["Hej, välkommen till Göteborg!", "Vi åker till Malmö i morgon.", "Älgen stod stilla i skogen.",
         "Mormor bakade kanelbullar.", "Det regnade hela natten."]


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> list[dict]:
    """A tar with members <key>.<field>; returns the entry list (offsets of every member)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    entries: dict[str, dict] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar.getmembers():
            key, name = member.name.split(".", 1)
            entries.setdefault(key, {"key": key, "members": {}})["members"][name] = [member.offset_data, member.size]
    return list(entries.values())


def synthetic_shards(root: Path, shards: int, per_shard: int, hidden: int = 64, seed: int = 0,
                     eval_samples: int = 0, with_reference: bool = True,
                     speakers: Sequence[str] = ("spk0", "spk1", "spk2")) -> Path:
    rng = np.random.default_rng(seed)
    index = {"format": FORMAT, "xvector_dim": hidden, "num_code_groups": 16, "splits": {}}
    plan = {"train": [per_shard] * shards, "eval": [eval_samples] if eval_samples else []}
    for split, counts in plan.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        records = []
        for shard_id, count in enumerate(counts):
            samples, lengths = [], {}
            for i in range(count):
                key = f"{split}{shard_id:03d}x{i:04d}"
                frames = int(np.clip(rng.lognormal(np.log(20), 0.5), 3, 80))
                ref = rng.integers(0, 2048, (int(rng.integers(3, 10)), 16)) if with_reference else None
                meta = {"text": TEXTS[i % len(TEXTS)], "speaker": speakers[i % len(speakers)], "language": "swedish",
                        "frames": frames, "reference": {"key": "other", "text": TEXTS[(i + 1) % len(TEXTS)]}}
                members = encode_sample(key, meta, rng.integers(0, 2048, (frames, 16)),
                                        rng.standard_normal(hidden), ref)
                samples.append((key, members))
                lengths[key] = (frames, 0 if ref is None else len(ref))
            tar_path = root / split / f"{split}-{shard_id:06d}.tar"
            entries = write_tar(tar_path, samples)
            for entry in entries:
                entry["frames"], entry["ref_frames"] = lengths[entry["key"]]
            entries_path = tar_path.with_suffix(".entries.json")
            entries_path.write_text(json.dumps(entries))
            records.append({"path": f"{split}/{tar_path.name}", "entries": f"{split}/{entries_path.name}",
                            "samples": count, "frames": sum(f for f, _ in lengths.values()),
                            "sha256": hashlib.sha256(tar_path.read_bytes()).hexdigest()})
        index["splits"][split] = records
    (root / INDEX_NAME).write_text(json.dumps(index))
    return root
