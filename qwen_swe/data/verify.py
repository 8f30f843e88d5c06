"""`qwen-swe shards inspect` (what a shard folder holds) and `qwen-swe shards verify` (is every byte of it right).

verify checks, for every shard the index lists: the tar and entry files exist, the tar's size and sha256 and the entry
file's sha256 match the index, the entry list agrees with the tar's own headers (same keys in the same order, same
member offsets and sizes), and every sample decodes and validates with `shard_format.decode_sample` when read at its
recorded offsets (frames agree with the entry list). Each problem names the shard, the key when there is one, and
what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..fingerprints import file_sha256
from .shard_format import (FORMAT, INDEX_NAME, SPLITS, ShardReader, TruncatedShard, check_member_checksums,
                           decode_sample, scan_tar_entries)


@dataclass
class Problem:
    shard: str
    key: Optional[str]
    problem: str

    def __str__(self) -> str:
        return f"{self.shard}" + (f" key {self.key}" if self.key else "") + f": {self.problem}"


@dataclass
class VerifyResult:
    shards: int = 0
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "shards": self.shards, "samples": self.samples,
                "problems": [asdict(p) for p in self.problems]}


def load_index(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INDEX_NAME
    if not path.exists():
        raise ValueError(f"{path}: no shard index; is {folder} a folder built by `qwen-swe shards build`?")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error}); rebuild the shards") from error
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, this version reads {FORMAT!r}")
    return index


# ---------------------------------------------------------------------------------------------------- inspect


def inspect_shards(folder: str | Path) -> dict[str, Any]:
    """Per split: shards, samples, hours, frames, speakers and languages (from index.json alone)."""
    index = load_index(folder)
    splits = {}
    named = index.get("splits", {})
    for split in sorted(named, key=lambda name: (SPLITS.index(name) if name in SPLITS else len(SPLITS), name)):
        shards = named[split]
        stats = index.get("stats", {}).get(split, {})
        seconds = stats.get("seconds", sum(float(s.get("seconds", 0.0)) for s in shards))
        speakers = stats.get("speakers", {})
        splits[split] = {
            "shards": len(shards), "samples": sum(int(s["samples"]) for s in shards), "hours": seconds / 3600.0,
            "frames": sum(int(s.get("frames", 0)) for s in shards),
            "bytes": sum(int(s.get("bytes", 0)) for s in shards),
            "speakers": len(speakers), "speaker_hours": {k: v["seconds"] / 3600.0 for k, v in speakers.items()},
            "languages": stats.get("languages", {}), "band_limited_samples": stats.get("band_limited_samples"),
            "eval_kinds": stats.get("eval_kinds", {}),
        }
    return {"folder": str(folder), "format": index["format"], "xvector_dim": index.get("xvector_dim"),
            "num_code_groups": index.get("num_code_groups"), "splits": splits,
            "rejections": index.get("rejections", {})}


def render_inspect(info: dict[str, Any]) -> str:
    lines = [f"{info['folder']}: {info['format']}, x-vector size {info['xvector_dim']}"]
    for split, s in info["splits"].items():
        languages = ", ".join(f"{k} {v}" for k, v in s["languages"].items()) or "-"
        lines.append(f"{split:<6} {s['samples']:>8} samples  {s['hours']:9.3f} h  {s['speakers']:>6} speakers  "
                     f"{s['shards']:>5} shards  {s['bytes'] / 1e6:9.1f} MB  languages: {languages}")
        if s["eval_kinds"]:
            lines.append("       eval: " + ", ".join(f"{k} {v}" for k, v in s["eval_kinds"].items()))
        top = sorted(s["speaker_hours"].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        if top:
            lines.append("       top speakers (h): " + ", ".join(f"{k} {v:.3f}" for k, v in top))
    rejected = info["rejections"]
    lines.append("rejected: " + (", ".join(f"{k} {v}" for k, v in rejected.items()) if rejected else "none"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- verify


def verify_shards(folder: str | Path, progress: bool = False) -> VerifyResult:
    """Check every shard of every split; problems are collected, not raised."""
    from tqdm import tqdm

    folder = Path(folder)
    index = load_index(folder)
    records = [record for shards in index.get("splits", {}).values() for record in shards]
    result = VerifyResult()
    for record in tqdm(records, desc="verify", unit="shard", disable=not progress):
        result.shards += 1
        result.samples += verify_shard(folder, record, index.get("xvector_dim"), result.problems)
    return result


def verify_shard(folder: Path, record: dict[str, Any], xvector_dim: Optional[int], problems: list[Problem]) -> int:
    """Check one shard; append its problems; return how many samples decoded cleanly."""
    name = record["path"]
    tar_path, entries_path = folder / record["path"], folder / record["entries"]
    if not tar_path.exists():
        problems.append(Problem(name, None, "shard file is missing"))
        return 0
    entries = _read_entries(entries_path, record, problems)
    _check_file(tar_path, record, problems)
    if entries is None:
        return 0
    if len(entries) != int(record["samples"]):
        problems.append(Problem(name, None, f"entry list has {len(entries)} samples, index says {record['samples']}"))
    _check_against_tar(tar_path, name, entries, problems)
    good = 0
    with ShardReader(keep_open=1) as reader:
        for entry in entries:
            error = _check_sample(reader, tar_path, entry, xvector_dim)
            if error:
                problems.append(Problem(name, entry.get("key"), error))
            else:
                good += 1
    return good


def _read_entries(path: Path, record: dict[str, Any], problems: list[Problem]) -> Optional[list[dict[str, Any]]]:
    if not path.exists():
        problems.append(Problem(record["path"], None, f"entry list {record['entries']} is missing"))
        return None
    expected = record.get("entries_sha256")
    if expected and file_sha256(path) != expected:
        problems.append(Problem(record["path"], None, f"entry list {record['entries']} sha256 differs from index"))
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(Problem(record["path"], None, f"entry list {record['entries']} is not JSON ({error})"))
        return None
    if not isinstance(entries, list):
        problems.append(Problem(record["path"], None, f"entry list {record['entries']} is not a list"))
        return None
    return entries


def _check_file(path: Path, record: dict[str, Any], problems: list[Problem]) -> None:
    size = path.stat().st_size
    if "bytes" in record and size != int(record["bytes"]):
        problems.append(Problem(record["path"], None, f"size {size} bytes, index says {record['bytes']} "
                                                      "(truncated or rewritten)"))
    if file_sha256(path) != record.get("sha256"):
        problems.append(Problem(record["path"], None, "sha256 differs from index (the bytes changed)"))


def _check_against_tar(path: Path, name: str, entries: list[dict[str, Any]], problems: list[Problem]) -> None:
    """The entry list must describe the tar exactly: same keys in order, same member offsets and sizes."""
    try:
        scanned = scan_tar_entries(path)
    except (ValueError, OSError) as error:
        problems.append(Problem(name, None, f"tar headers cannot be read to the end: {error}"))
        return
    listed = {e.get("key"): e for e in entries}
    found = {e["key"]: e for e in scanned}
    for key in [e.get("key") for e in entries if e.get("key") not in found]:
        problems.append(Problem(name, key, "listed in the entry list but not in the tar"))
    for key in [k for k in found if k not in listed]:
        problems.append(Problem(name, key, "in the tar but not in the entry list"))
    for key, entry in found.items():
        members = {field: list(span) for field, span in listed.get(key, {}).get("members", {}).items()}
        if key in listed and members != entry["members"]:
            problems.append(Problem(name, key, f"member offsets/sizes {members} differ from the tar's "
                                               f"{entry['members']}"))
    if [e["key"] for e in scanned if e["key"] in listed] != [e.get("key") for e in entries if e.get("key") in found]:
        problems.append(Problem(name, None, "samples are in a different order in the tar and the entry list"))


def _check_sample(reader: ShardReader, path: Path, entry: dict[str, Any],
                  xvector_dim: Optional[int]) -> Optional[str]:
    key = entry.get("key")
    if not isinstance(key, str) or not isinstance(entry.get("members"), dict):
        return "entry without a key or members"
    members = {}
    for field_name, span in entry["members"].items():  # one by one: a bad offset must not hide the others
        offset, size = int(span[0]), int(span[1])
        try:
            members[field_name] = reader.read(path, offset, size)
        except TruncatedShard as error:
            return f"member {field_name!r} truncated ({error.got} of {size} bytes at offset {offset})"
    try:
        sample = decode_sample(key, members, xvector_dim)  # first: what is wrong says more than that it changed
        check_member_checksums(entry, members)
    except ValueError as error:
        return str(error)
    frames = int(sample.codes.shape[0])
    if "frames" in entry and int(entry["frames"]) != frames:
        return f"codes have {frames} frames, the entry list says {entry['frames']}"
    if "frames" in sample.meta and int(sample.meta["frames"]) != frames:
        return f"codes have {frames} frames, the sample's json says {sample.meta['frames']}"
    ref_frames = 0 if sample.ref_codes is None else int(sample.ref_codes.shape[0])
    if int(entry.get("ref_frames") or 0) != ref_frames:
        return f"reference codes have {ref_frames} frames, the entry list says {entry.get('ref_frames')}"
    return None
