"""`qwen-swe shards build`: sources -> filtered, split, encoded WebDataset shards in the shard_format layout.

The build is planned before anything is encoded, so its output is a pure function of the inputs and the settings,
whatever the worker count and however often it was interrupted:

1. collect: read every source, normalise transcripts, derive each sample's key from its source id (sha1, no dots);
   problems found here (bad lines, non-UTF-8 transcripts, duplicate source ids, empty text) become rejections;
2. scan (parallel workers): decode, fold to mono, resample to 24 kHz, hash the 24 kHz int16 PCM, measure duration,
   clipping, level; checkpointed in chunks under OUT/.build/scan/ so a rerun does not decode everything again;
3. select: keep what passed, drop duplicate audio (the smallest key of each hash survives), split by speaker (and
   optionally by utterance) with seeded hashes of the names, pick each sample's same-speaker ICL reference with a
   seeded hash, tokenize every text's prompt with the model's text tokenizer (the ids are stored with each sample,
   so training never tokenizes), order each split by key and cut it into shards by count and (exactly predicted) size;
4. encode, shard by shard: decode again in the workers, batched codec codes and per-clip x-vectors in the main
   process, cached per shard under OUT/.build/encoded/ (references may live in any shard);
5. write, shard by shard: `<split>-NNNNNN.tar` through webdataset's TarWriter with fixed tar headers, written as
   `.tar.tmp` and renamed; then `.entries.json` (offsets scanned from the finished tar), also renamed into place.
   A shard whose .tar and .entries.json both exist is finished and skipped on a rerun;
6. rejections.jsonl, report.md + durations.png, and index.json last; then OUT/.build is removed.

For tests, QWEN_SWE_CRASH_AFTER_SHARDS=K stops the build with exit code 3 after K shard steps (encoding steps of
stage 4 count first, then writing steps of stage 5), as a crash would.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from ..files import write_json_atomic, write_text_atomic
from ..model_shapes import FRAME_RATE, NUM_CODE_GROUPS, SAMPLE_RATE
from ..units import MIB
from .shard_format import (ENTRIES_SUFFIX, FORMAT, INDEX_NAME, SPLITS, encode_sample, npy_bytes, scan_tar_entries,
                           shard_stem)
from .sources import AudioProblem, AudioRef, SourceItem, SourceSpec, decode_audio, read_source
from .text import normalize_text

WORK_DIR = ".build"
REJECTIONS_NAME = "rejections.jsonl"
CRASH_ENV = "QWEN_SWE_CRASH_AFTER_SHARDS"
CRASH_EXIT_CODE = 3
SCAN_CHUNK = 2000
XVECTOR_POLICIES = ("self", "speaker-reference")
TAR_MTIME = 0  # fixed tar header fields: reruns are byte-identical
TAR_USER = "qwen-swe"
TAR_MODE = 0o444
REJECTION_REASONS = ("unreadable_audio", "empty_audio", "too_short", "too_long", "clipping", "silence",
                     "empty_text", "bad_text_encoding", "duplicate_audio", "duplicate_key", "missing_audio",
                     "missing_text", "bad_record", "no_letters", "speaking_rate", "unknown_language")
# The language this package teaches: accepted by a build even before `add-language` or training registers it.
TARGET_LANGUAGE = "swedish"


class BuildError(ValueError):
    """A build that cannot go on; the message names the file or setting and what to do."""


@dataclass
class BuildConfig:
    out: str
    model: str
    sources: list[SourceSpec]
    language: str = "swedish"  # for items that name none
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    # Letters of the normalised transcript per second of audio: outside this window audio and transcript do not
    # belong together (a clip cut short, a transcript of a longer recording). Swedish read speech is about 10-16.
    min_letters_per_second: float = 2.0
    max_letters_per_second: float = 30.0
    max_clipped_fraction: float = 0.001
    silence_dbfs: float = -50.0
    loudness_dbfs: Optional[float] = None  # RMS target in dBFS; None keeps the source level
    peak_dbfs: float = -1.0  # loudness normalisation never lifts a peak above this
    numbers_to_words: bool = False
    xvector_from: str = "self"
    eval_speakers: int = 0
    eval_fraction: float = 0.0
    eval_utterances_per_speaker: int = 0
    seed: int = 0
    samples_per_shard: int = 2000
    max_shard_bytes: int = 256 * MIB  # 0: no size cap (the CLI default, "256MB": sizes are binary, see units.py)
    encode_batch_seconds: float = 240.0
    codec_precision: str = "auto"
    device: str = "cpu"
    workers: int = 1
    progress: bool = True

    def check(self) -> None:
        if not self.sources:
            raise BuildError("no sources: give at least one of --manifest, --hf-dataset, --parquet, --arrow, "
                             "--folder, --tsv")
        if self.xvector_from not in XVECTOR_POLICIES:
            raise BuildError(f"--xvector-from {self.xvector_from!r}: choose {' or '.join(XVECTOR_POLICIES)}")
        if not 0 < self.min_seconds < self.max_seconds:
            raise BuildError(f"--min-seconds {self.min_seconds} / --max-seconds {self.max_seconds}: need "
                             "0 < min < max")
        if not 0 <= self.min_letters_per_second < self.max_letters_per_second:
            raise BuildError(f"--min-letters-per-second {self.min_letters_per_second} / --max-letters-per-second "
                             f"{self.max_letters_per_second}: need 0 <= min < max")
        if self.eval_speakers and self.eval_fraction:
            raise BuildError("give --eval-speakers or --eval-fraction, not both")
        if not 0 <= self.eval_fraction < 1:
            raise BuildError(f"--eval-fraction {self.eval_fraction}: must be in [0, 1)")
        if self.samples_per_shard < 1 or self.workers < 1 or self.encode_batch_seconds <= 0:
            raise BuildError("--samples-per-shard, --workers and --encode-batch-seconds must be positive")

    def identity(self) -> dict[str, Any]:
        """Every setting the output depends on (not the output folder, the worker count or the progress bar)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("out", "workers", "progress", "sources")}
        settings["model"] = str(Path(self.model).resolve())
        settings["sources"] = [spec.describe() for spec in self.sources]
        return settings


@dataclass
class Candidate:
    key: str
    source_id: str
    text: str
    text_raw: str
    speaker: Optional[str]
    language: str
    audio: AudioRef
    extra: dict[str, Any]


@dataclass
class Planned:
    """An accepted sample with everything its shard member json says, decided before encoding."""

    candidate: Candidate
    scan: dict[str, Any]
    speaker: str
    split: str = "train"
    eval_kind: Optional[str] = None
    reference: Optional[str] = None  # key of the same-speaker ICL reference
    meta: dict[str, Any] = field(default_factory=dict)
    # Token ids of layout.target_prompt(text) and layout.reference_prompt(text) (the latter for samples that use
    # this one as their reference); int32 to keep millions of planned samples small. None: no tokenizer given.
    prompt_ids: Optional[np.ndarray] = None
    reference_prompt_ids: Optional[np.ndarray] = None

    @property
    def key(self) -> str:
        return self.candidate.key

    @property
    def frames(self) -> int:
        return int(self.scan["frames"])


@dataclass
class Shard:
    split: str
    number: int
    keys: list[str]

    @property
    def stem(self) -> str:
        return shard_stem(self.split, self.number)


@dataclass
class BuildSummary:
    out: str
    samples: dict[str, int]
    shards: dict[str, int]
    rejected: dict[str, int]
    resumed_shards: int = 0  # shards an earlier, interrupted run had finished
    already_complete: bool = False


# ----------------------------------------------------------------------------------------- step 1: collect


def sample_key(source_id: str) -> str:
    """Stable key of a sample: sha1 of its source id (hex: no dots, no slashes)."""
    return hashlib.sha1(source_id.encode("utf-8")).hexdigest()


def known_languages(model_dir: str | Path) -> set[str]:
    """What a sample's language may be: the model's languages, "auto", and the language this package registers."""
    from ..modeling import load_model_config

    config = load_model_config(model_dir)
    return {name.lower() for name in dict(config.talker_config.codec_language_id or {})} | {"auto", TARGET_LANGUAGE}


def collect_candidates(config: BuildConfig, languages: Optional[set[str]] = None
                       ) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """All items of all sources as candidates, and the rejections found while reading them (`languages`: the ones
    a sample may name; None: any)."""
    candidates: list[Candidate] = []
    rejections: list[dict[str, Any]] = []
    first_seen: dict[str, str] = {}
    for spec in config.sources:
        for item in read_source(spec):
            key = sample_key(item.source_id)
            if key in first_seen:
                rejections.append(rejection(item.source_id, key, "duplicate_key",
                                            f"source id {item.source_id!r} appears more than once in the sources; "
                                            "the first occurrence is kept"))
                continue
            first_seen[key] = item.source_id
            candidate, problem = _candidate(item, key, config, languages)
            if problem:
                rejections.append(rejection(item.source_id, key, *problem))
            else:
                candidates.append(candidate)  # type: ignore[arg-type]
    candidates.sort(key=lambda c: c.key)
    return candidates, rejections


def _candidate(item: SourceItem, key: str, config: BuildConfig,
               languages: Optional[set[str]]) -> tuple[Optional[Candidate], Optional[tuple]]:
    if item.problem:
        return None, item.problem
    raw = item.text or ""
    text = normalize_text(raw, numbers_to_words=config.numbers_to_words)
    if not text:
        return None, ("empty_text", f"{item.source_id}: the transcript is empty" + (" after normalisation" if raw
                                                                                     else ""))
    if not any(char.isalpha() for char in text):
        return None, ("no_letters", f"{item.source_id}: the transcript {text[:40]!r} has no letters to speak")
    language = (item.language or config.language).lower()
    if languages is not None and language not in languages:
        return None, ("unknown_language", f"{item.source_id}: language {language!r} is not one of the model's "
                                          f"({', '.join(sorted(languages))})")
    assert item.audio is not None
    return Candidate(key=key, source_id=item.source_id, text=text, text_raw=raw, speaker=item.speaker,
                     language=language, audio=item.audio, extra=item.extra), None


def _rate_problem(candidate: Candidate, seconds: float, window: tuple[float, float]) -> Optional[tuple[str, str]]:
    """A transcript too long or too short for its audio: they do not belong together."""
    letters = sum(char.isalpha() for char in candidate.text)
    rate = letters / seconds
    if window[0] <= rate <= window[1]:
        return None
    return "speaking_rate", (f"{candidate.source_id}: {letters} letters in {seconds:.2f} s = {rate:.1f} per second, "
                             f"outside {window[0]:g}-{window[1]:g} (--min/--max-letters-per-second): do audio and "
                             "transcript belong together?")


def rejection(source_id: str, key: Optional[str], reason: str, detail: str) -> dict[str, Any]:
    return {"source": source_id, "key": key, "reason": reason, "detail": detail}


# -------------------------------------------------------------------------------------------- step 2: scan


@dataclass(frozen=True)
class ScanSettings:
    min_seconds: float
    max_seconds: float
    max_clipped_fraction: float
    silence_dbfs: float
    loudness_dbfs: Optional[float]
    peak_dbfs: float
    frame_samples: int


def pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")


def dbfs(value: float) -> float:
    return 20.0 * math.log10(max(value, 1e-10))


def scan_one(job: tuple[str, AudioRef], settings: ScanSettings) -> dict[str, Any]:
    """Decode one candidate and measure it (runs in a worker process): a verdict and the numbers behind it."""
    key, ref = job
    try:
        decoded = decode_audio(ref)
    except AudioProblem as problem:
        return {"key": key, "reason": problem.reason, "detail": problem.detail}
    audio = decoded.audio
    samples = audio.samples
    if samples.size == 0:
        return {"key": key, "reason": "empty_audio", "detail": f"{ref.describe()}: no samples after resampling"}
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    peak = float(np.max(np.abs(samples)))
    result: dict[str, Any] = {
        "key": key, "reason": None, "detail": "", "samples": int(samples.size), "seconds": samples.size / SAMPLE_RATE,
        "frames": -(-samples.size // settings.frame_samples), "original_rate": audio.original_rate,
        "original_channels": audio.original_channels, "band_limited": audio.band_limited,
        "sha256": hashlib.sha256(pcm16(samples).tobytes()).hexdigest(),
        "clipped_fraction": decoded.clipped_fraction, "rms_dbfs": dbfs(rms), "gain_db": None,
    }
    result["reason"], result["detail"] = _verdict(result, settings, ref)
    if settings.loudness_dbfs is not None and result["reason"] is None:
        result["gain_db"] = min(settings.loudness_dbfs - result["rms_dbfs"], settings.peak_dbfs - dbfs(peak))
    return result


def _verdict(scan: dict[str, Any], settings: ScanSettings, ref: AudioRef) -> tuple[Optional[str], str]:
    where, seconds = ref.describe(), scan["seconds"]
    if seconds < settings.min_seconds:
        return "too_short", f"{where}: {seconds:.2f} s < --min-seconds {settings.min_seconds}"
    if seconds > settings.max_seconds:
        return "too_long", f"{where}: {seconds:.2f} s > --max-seconds {settings.max_seconds}"
    if scan["clipped_fraction"] > settings.max_clipped_fraction:
        return "clipping", (f"{where}: {100 * scan['clipped_fraction']:.2f}% of samples at full scale > "
                            f"--max-clipped-fraction {settings.max_clipped_fraction}")
    if scan["rms_dbfs"] < settings.silence_dbfs:
        return "silence", f"{where}: RMS {scan['rms_dbfs']:.1f} dBFS < --silence-dbfs {settings.silence_dbfs}"
    return None, ""


def scan_candidates(candidates: list[Candidate], settings: ScanSettings, work: Path, pool: "WorkerPool",
                    progress: bool) -> dict[str, dict[str, Any]]:
    """Scan results by key; finished chunks are read back from OUT/.build/scan instead of decoded again."""
    from tqdm import tqdm

    scan_dir = work / "scan"
    scan_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    worker = functools.partial(scan_one, settings=settings)
    with tqdm(total=len(candidates), desc="scan audio", unit="clip", disable=not progress) as bar:
        for number, start in enumerate(range(0, len(candidates), SCAN_CHUNK)):
            chunk = candidates[start:start + SCAN_CHUNK]
            path = scan_dir / f"chunk-{number:06d}.jsonl"
            cached = _read_scan_chunk(path, [c.key for c in chunk])
            if cached is None:
                cached = list(pool.map(worker, [(c.key, c.audio) for c in chunk], bar))
                write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in cached))
            else:
                bar.update(len(chunk))
            results.update((r["key"], r) for r in cached)
    return results


def _read_scan_chunk(path: Path, keys: list[str]) -> Optional[list[dict[str, Any]]]:
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return rows if [r["key"] for r in rows] == keys else None  # another plan: scan again


# ------------------------------------------------------------------------------------------ step 3: select


def select_samples(candidates: list[Candidate], scans: dict[str, dict[str, Any]],
                   rejections: list[dict[str, Any]], letters_per_second: tuple[float, float] = (0.0, math.inf)
                   ) -> list[Planned]:
    """Candidates that passed every check, one per distinct audio (the smallest key of each hash wins)."""
    passed: list[Planned] = []
    for candidate in candidates:
        scan = scans[candidate.key]
        problem = (scan["reason"], scan["detail"]) if scan["reason"] else \
            _rate_problem(candidate, scan["seconds"], letters_per_second)
        if problem:
            rejections.append(rejection(candidate.source_id, candidate.key, *problem))
            continue
        speaker = candidate.speaker or f"utt-{candidate.key[:12]}"  # unknown speaker: its own one-clip speaker
        passed.append(Planned(candidate=candidate, scan=scan, speaker=speaker))
    kept: dict[str, Planned] = {}
    accepted: list[Planned] = []
    for planned in passed:  # candidates are sorted by key, so the first of each hash is the smallest key
        first = kept.setdefault(planned.scan["sha256"], planned)
        if first is planned:
            accepted.append(planned)
        else:
            rejections.append(rejection(planned.candidate.source_id, planned.key, "duplicate_audio",
                                        f"same 24 kHz audio as {first.candidate.source_id!r} (kept)"))
    return accepted


def _seeded_rank(seed: int, *parts: str) -> str:
    return hashlib.sha1(":".join([str(seed), *parts]).encode("utf-8")).hexdigest()


def assign_splits(samples: list[Planned], config: BuildConfig) -> None:
    """Speaker-disjoint eval speakers, then optionally eval utterances of train speakers; by seeded name hashes."""
    by_speaker: dict[str, list[Planned]] = defaultdict(list)
    for sample in samples:
        by_speaker[sample.speaker].append(sample)
    speakers = sorted(by_speaker, key=lambda name: _seeded_rank(config.seed, "speaker", name))
    count = config.eval_speakers
    if config.eval_fraction:
        count = max(1, round(config.eval_fraction * len(speakers)))
    if count and count >= len(speakers):
        raise BuildError(f"{count} eval speaker(s) asked for, but only {len(speakers)} speaker(s) passed the "
                         "filters; lower --eval-speakers / --eval-fraction so that training keeps a speaker")
    for name in speakers[:count]:
        for sample in by_speaker[name]:
            sample.split, sample.eval_kind = "eval", "unseen_speaker"
    per_speaker = config.eval_utterances_per_speaker
    if per_speaker:
        for name in speakers[count:]:
            group = sorted(by_speaker[name], key=lambda s: _seeded_rank(config.seed, "utterance", s.key))
            if len(group) > per_speaker:  # a speaker keeps at least one training utterance
                for sample in group[:per_speaker]:
                    sample.split, sample.eval_kind = "eval", "seen_speaker"


def choose_references(samples: list[Planned], seed: int) -> None:
    """Each sample's ICL reference: another utterance of the same speaker, the one with the smallest seeded hash of
    (sample, candidate); none for a one-utterance speaker. Candidates come from the sample's own split; a held-out
    utterance of a training speaker that is alone in eval/ borrows a training utterance (conditioning only), but a
    training sample never gets eval audio."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for sample in samples:
        groups[(sample.split, sample.speaker)].append(sample.key)
    for sample in samples:
        others = [k for k in groups[(sample.split, sample.speaker)] if k != sample.key]
        if not others and sample.split == "eval":
            others = groups.get(("train", sample.speaker), [])
        if others:
            sample.reference = min(others, key=lambda k: _seeded_rank(seed, "reference", sample.key, k))


def build_meta(sample: Planned, by_key: dict[str, Planned], xvector_from: str) -> dict[str, Any]:
    """The `<key>.json` member (shard_format): fixed at plan time, so shard sizes are known before encoding."""
    candidate, scan = sample.candidate, sample.scan
    reference = by_key[sample.reference] if sample.reference else None
    meta: dict[str, Any] = {
        "text": candidate.text, "speaker": sample.speaker, "language": candidate.language,
        "seconds": scan["seconds"], "frames": scan["frames"], "original_rate": scan["original_rate"],
        "original_channels": scan["original_channels"], "band_limited": scan["band_limited"],
        "source": candidate.source_id, "extra": candidate.extra, "split": sample.split,
        "audio_sha256": scan["sha256"], "clipped_fraction": scan["clipped_fraction"], "rms_dbfs": scan["rms_dbfs"],
        "gain_db": scan["gain_db"],
        "reference": {"key": reference.key, "text": reference.candidate.text} if reference else None,
        "xvector_from": "reference" if reference and xvector_from == "speaker-reference" else "self",
    }
    if candidate.text_raw != candidate.text:
        meta["text_raw"] = candidate.text_raw
    if sample.eval_kind:
        meta["eval_kind"] = sample.eval_kind
    return meta


def _tar_member_bytes(size: int) -> int:
    return 512 + -(-size // 512) * 512  # header block + data padded to whole blocks


@functools.lru_cache(maxsize=4096)
def _npy_size(shape: tuple[int, ...], dtype: str) -> int:
    return len(npy_bytes(np.zeros(shape, dtype=dtype)))


def sample_tar_bytes(sample: Planned, by_key: dict[str, Planned], xvector_dim: int) -> int:
    """Exact bytes the sample's members take in the tar."""
    meta_size = len(json.dumps(member_meta(sample, by_key), ensure_ascii=False, sort_keys=True).encode("utf-8"))
    total = _tar_member_bytes(meta_size)
    total += _tar_member_bytes(_npy_size((sample.frames, NUM_CODE_GROUPS), "<i2"))
    total += _tar_member_bytes(_npy_size((xvector_dim,), "<f4"))
    if sample.reference:
        total += _tar_member_bytes(_npy_size((by_key[sample.reference].frames, NUM_CODE_GROUPS), "<i2"))
    return total


def tar_file_bytes(member_bytes: int) -> int:
    """Size of a tar holding members of this total size: two zero end blocks, padded to whole 10 KiB records
    (what Python's tarfile writes)."""
    import tarfile

    return -(-(member_bytes + 1024) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def group_into_shards(samples: list[Planned], by_key: dict[str, Planned], config: BuildConfig,
                      xvector_dim: int) -> list[Shard]:
    """Per split, samples in key order cut into shards of at most --samples-per-shard samples and (when set)
    --max-shard-bytes bytes of tar file; a single sample larger than the cap gets a shard of its own."""
    shards: list[Shard] = []
    for split in SPLITS:
        keys = sorted(s.key for s in samples if s.split == split)
        current: list[str] = []
        size = 0
        for key in keys:
            item = sample_tar_bytes(by_key[key], by_key, xvector_dim)
            full = len(current) >= config.samples_per_shard or (
                config.max_shard_bytes and tar_file_bytes(size + item) > config.max_shard_bytes)
            if current and full:
                shards.append(Shard(split, sum(1 for s in shards if s.split == split), current))
                current, size = [], 0
            current.append(key)
            size += item
        if current:
            shards.append(Shard(split, sum(1 for s in shards if s.split == split), current))
    return shards


# ------------------------------------------------------------------------------------------ step 4: encode


def load_for_encoding(job: tuple[str, AudioRef, Optional[float], str]) -> np.ndarray:
    """Decode a clip again (in a worker), check it is the audio that was scanned, apply the loudness gain."""
    key, ref, gain_db, sha256 = job
    try:
        samples = decode_audio(ref).audio.samples
    except AudioProblem as problem:
        raise BuildError(f"sample {key}: {problem.detail}; the source changed during the build") from problem
    if hashlib.sha256(pcm16(samples).tobytes()).hexdigest() != sha256:
        raise BuildError(f"sample {key} ({ref.describe()}): the audio changed since it was scanned; rerun with "
                         "--restart to rescan")
    if gain_db:
        samples = (samples * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
    return samples


def encode_shard(shard: Shard, by_key: dict[str, Planned], encoder: Any, pool: "WorkerPool", folder: Path,
                 batch_seconds: float, bar: Any) -> None:
    """Codes and self x-vectors of one shard's samples, cached in the work folder (see `EncodedCache`)."""
    from .encode import plan_batches

    samples = [by_key[k] for k in shard.keys]
    frame = encoder.frame_samples
    lengths = [-(-int(s.scan["samples"]) // frame) * frame for s in samples]  # padded to whole frames
    codes: dict[str, np.ndarray] = {}
    xvectors: dict[str, np.ndarray] = {}
    batches = plan_batches(lengths, max(int(batch_seconds * SAMPLE_RATE), 1))
    for window in _windows(batches, 4):  # bounded memory: only a few batches of audio are decoded at a time
        jobs = [(samples[i].key, samples[i].candidate.audio, samples[i].scan["gain_db"], samples[i].scan["sha256"])
                for batch in window for i in batch]
        wavs = dict(zip([job[0] for job in jobs], pool.map(load_for_encoding, jobs, None)))
        for batch in window:
            keys = [samples[i].key for i in batch]
            for key, clip_codes in zip(keys, encoder.encode_codes([wavs[k] for k in keys])):
                if clip_codes.shape[0] != by_key[key].frames:
                    raise BuildError(f"sample {key}: the codec gave {clip_codes.shape[0]} frames, the plan expected "
                                     f"{by_key[key].frames}")
                codes[key] = clip_codes
                # x-vectors from the clip itself; values past full scale only come from resampling overshoot
                xvectors[key] = encoder.xvector(np.clip(wavs[key], -1.0, 1.0))
            bar.update(len(batch))
    EncodedCache.save(folder, shard.keys, codes, xvectors)


def _windows(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class EncodedCache:
    """Codes and x-vectors of every encoded shard, for writing shards and their references (which may live in
    any shard). One folder per shard: all codes concatenated in codes.npy, x-vectors stacked in xvectors.npy,
    and keys.json (key -> first frame, frames, row), written last, marks the shard encoded. Arrays are memory-mapped,
    so opening a shard for one reference costs a header read, not a load."""

    KEYS = "keys.json"

    def __init__(self, folder: Path, shard_of: dict[str, str], keep_open: int = 64):
        self.folder, self.shard_of, self.keep_open = folder, shard_of, keep_open
        self.open: dict[str, tuple[dict[str, list[int]], np.ndarray, np.ndarray]] = {}

    @classmethod
    def is_encoded(cls, folder: Path) -> bool:
        return (folder / cls.KEYS).exists()

    @classmethod
    def save(cls, folder: Path, keys: list[str], codes: dict[str, np.ndarray], xvectors: dict[str, np.ndarray]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        starts = np.cumsum([0] + [len(codes[k]) for k in keys])
        table = {k: [int(starts[i]), len(codes[k]), i] for i, k in enumerate(keys)}
        np.save(folder / "codes.npy", np.concatenate([codes[k] for k in keys]), allow_pickle=False)
        np.save(folder / "xvectors.npy", np.stack([xvectors[k] for k in keys]), allow_pickle=False)
        write_text_atomic(folder / cls.KEYS, json.dumps(table))

    def get(self, key: str, kind: str) -> np.ndarray:
        name = self.shard_of[key]
        if name in self.open:
            self.open[name] = self.open.pop(name)  # most recently used goes last
        else:
            if len(self.open) >= self.keep_open:
                self.open.pop(next(iter(self.open)))
            folder = self.folder / name
            table = json.loads((folder / self.KEYS).read_text(encoding="utf-8"))
            self.open[name] = (table, np.load(folder / "codes.npy", mmap_mode="r", allow_pickle=False),
                               np.load(folder / "xvectors.npy", mmap_mode="r", allow_pickle=False))
        table, codes, xvectors = self.open[name]
        start, frames, row = table[key]
        return np.array(codes[start:start + frames]) if kind == "codes" else np.array(xvectors[row])

    def close(self) -> None:
        self.open.clear()


# ------------------------------------------------------------------------------------------- step 5: write


def write_shard(shard: Shard, by_key: dict[str, Planned], cache: EncodedCache, out: Path, xvector_dim: int) -> None:
    """One .tar (TarWriter, fixed headers) and its .entries.json, each written to a .tmp and renamed."""
    from webdataset import TarWriter

    tar_path = out / f"{shard.stem}.tar"
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = tar_path.with_name(tar_path.name + ".tmp")
    with open(temporary, "wb") as handle:
        writer = TarWriter(handle, user=TAR_USER, group=TAR_USER, mode=TAR_MODE, mtime=TAR_MTIME, encoder=False)
        for key in shard.keys:
            writer.write({"__key__": key, **_members(by_key[key], by_key, cache, xvector_dim)})
        writer.close()
    entries = scan_tar_entries(temporary)
    for entry in entries:
        sample = by_key[entry["key"]]
        entry["frames"] = sample.frames
        entry["ref_frames"] = by_key[sample.reference].frames if sample.reference else 0
    if [e["key"] for e in entries] != shard.keys:
        raise BuildError(f"{temporary}: members are not in plan order; is the webdataset version supported?")
    os.replace(temporary, tar_path)
    entries_path = out / f"{shard.stem}{ENTRIES_SUFFIX}"
    write_text_atomic(entries_path, json.dumps(entries, sort_keys=True))


def _members(sample: Planned, by_key: dict[str, Planned], cache: EncodedCache, xvector_dim: int) -> dict[str, bytes]:
    codes = cache.get(sample.key, "codes")
    if sample.meta["xvector_from"] == "reference":
        xvector = cache.get(sample.reference, "xvector")  # type: ignore[arg-type]
    else:
        xvector = cache.get(sample.key, "xvector")
    if xvector.shape != (xvector_dim,):
        raise BuildError(f"sample {sample.key}: x-vector of shape {list(xvector.shape)}, expected [{xvector_dim}]")
    ref_codes = cache.get(sample.reference, "codes") if sample.reference else None
    return encode_sample(sample.key, member_meta(sample, by_key), codes, xvector, ref_codes)


def shard_is_complete(out: Path, shard: Shard) -> bool:
    return (out / f"{shard.stem}.tar").exists() and (out / f"{shard.stem}{ENTRIES_SUFFIX}").exists()


# ----------------------------------------------------------------------------------- step 6: index, report


def split_stats(samples: list[Planned], split: str) -> dict[str, Any]:
    chosen = [s for s in samples if s.split == split]
    speakers: dict[str, dict[str, Any]] = {}
    for sample in sorted(chosen, key=lambda s: s.key):
        entry = speakers.setdefault(sample.speaker, {"samples": 0, "seconds": 0.0})
        entry["samples"] += 1
        entry["seconds"] += sample.scan["seconds"]
    seconds = sum(s.scan["seconds"] for s in sorted(chosen, key=lambda s: s.key))
    return {
        "samples": len(chosen), "seconds": seconds, "hours": seconds / 3600.0,
        "frames": sum(s.frames for s in chosen), "speakers": dict(sorted(speakers.items())),
        "languages": dict(sorted(Counter(s.candidate.language for s in chosen).items())),
        "original_rates": {str(k): v for k, v in sorted(Counter(s.scan["original_rate"] for s in chosen).items())},
        "band_limited_samples": sum(1 for s in chosen if s.scan["band_limited"]),
        "with_reference": sum(1 for s in chosen if s.reference),
        "eval_kinds": dict(sorted(Counter(s.eval_kind for s in chosen if s.eval_kind).items())),
    }


def shard_record(out: Path, shard: Shard, by_key: dict[str, Planned]) -> dict[str, Any]:
    from ..fingerprints import file_sha256

    tar_path, entries_path = out / f"{shard.stem}.tar", out / f"{shard.stem}{ENTRIES_SUFFIX}"
    samples = [by_key[k] for k in shard.keys]
    return {
        "path": f"{shard.stem}.tar", "entries": f"{shard.stem}{ENTRIES_SUFFIX}", "split": shard.split,
        "samples": len(samples), "frames": sum(s.frames for s in samples),
        "ref_frames": sum(by_key[s.reference].frames for s in samples if s.reference),
        "seconds": sum(s.scan["seconds"] for s in samples), "bytes": tar_path.stat().st_size,
        "sha256": file_sha256(tar_path), "entries_sha256": file_sha256(entries_path),
    }


BUILD_PACKAGES = ("qwen-swe", "qwen-tts", "torch", "transformers", "numpy", "soundfile", "soxr", "webdataset",
                  "datasets", "num2words", "matplotlib")


def package_versions() -> dict[str, Optional[str]]:
    """index.json's `versions`: the packages whose versions decide what a build writes."""
    from ..envinfo import package_versions as versions_of

    return versions_of(BUILD_PACKAGES)


# ------------------------------------------------------------------------------------------------ workers


class WorkerPool:
    """Ordered map over spawned worker processes (or in-process for one worker): results never depend on the
    worker count. Spawned, not forked: the parent holds torch and its threads."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: Any = None

    def map(self, function: Callable[[Any], Any], jobs: list[Any], bar: Any) -> Iterator[Any]:
        if self.workers <= 1 or len(jobs) <= 1:
            iterator: Iterable[Any] = map(function, jobs)
        else:
            if self._pool is None:
                import multiprocessing

                self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
            iterator = self._pool.imap(function, jobs, chunksize=max(1, min(16, len(jobs) // (4 * self.workers))))
        for result in iterator:
            if bar is not None:
                bar.update(1)
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


# ------------------------------------------------------------------------------------------------ the build


class _CrashSwitch:
    """QWEN_SWE_CRASH_AFTER_SHARDS=K: exit with code 3 after K shard steps (tests of resume use it)."""

    def __init__(self) -> None:
        value = os.environ.get(CRASH_ENV, "")
        self.remaining = int(value) if value.strip() else None

    def step_done(self) -> None:
        if self.remaining is None:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            raise SystemExit(CRASH_EXIT_CODE)


def build_shards(config: BuildConfig, encoder: Any = None, restart: bool = False,
                 say: Callable[[str], None] = print) -> BuildSummary:
    """Run (or resume) a build; `encoder` may be passed in (an `encode.Encoder`) to reuse a loaded model.

    With workers > 1 the decode workers are spawned processes, which import the caller's main module: call this
    from under `if __name__ == "__main__":` in a script (the CLI and pytest already are).
    """
    from ..fingerprints import text_tokenizer_fingerprints, weight_fingerprints
    from .encode import codec_frame_samples, resolve_precision

    from ..modeling import check_model_folder

    config.check()
    model_dir = check_model_folder(config.model)  # names a missing speech_tokenizer/ etc. before any work
    languages = known_languages(model_dir)
    if config.language.lower() not in languages:
        raise BuildError(f"--language {config.language!r} is not a language of {model_dir} (known: "
                         f"{', '.join(sorted(languages))}); register it first with `qwen-swe add-language "
                         f"{model_dir} {config.language}`")
    out = Path(config.out)
    if restart:
        remove_build_outputs(out)
    identity = {**config.identity(), "codec_precision": resolve_precision(config.codec_precision, config.device),
                "fingerprints": {"codec": weight_fingerprints(model_dir / "speech_tokenizer"),
                                 "model": weight_fingerprints(model_dir),
                                 "text_tokenizer": text_tokenizer_fingerprints(model_dir)}}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    work = _prepare_output(out, identity, fingerprint)
    if work is None:
        say(f"{out}: already complete (index.json matches these settings); nothing to do")
        return _summary_from_index(out, already_complete=True)

    candidates, rejections = collect_candidates(config, languages)
    say(f"{len(candidates)} candidate utterances from {len(config.sources)} source(s), {len(rejections)} rejected "
        "while reading")
    settings = ScanSettings(config.min_seconds, config.max_seconds, config.max_clipped_fraction,
                            config.silence_dbfs, config.loudness_dbfs, config.peak_dbfs, codec_frame_samples(model_dir))
    pool = WorkerPool(config.workers)
    try:
        scans = scan_candidates(candidates, settings, work, pool, config.progress)
        samples = select_samples(candidates, scans, rejections,
                                 (config.min_letters_per_second, config.max_letters_per_second))
        if not samples:
            reasons = Counter(r["reason"] for r in rejections)
            sources = ", ".join(f"{spec.kind} {spec.path}" for spec in config.sources)
            raise BuildError(f"no utterance of {sources} passed the filters ("
                             + (", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "the sources hold none")
                             + "); `qwen-swe shards build --help` lists the filters and their options")
        if encoder is None:
            from .encode import Encoder

            encoder = Encoder(config.model, device=config.device, precision=config.codec_precision)
        shards, by_key = plan_shards(samples, config, encoder.xvector_dim, getattr(encoder, "text_tokenizer", None))
        _check_plan(work, shards, by_key)
        resumed = _encode_and_write(shards, by_key, encoder, pool, work, out, config)
    finally:
        pool.close()
    _finish(out, samples, shards, by_key, rejections, encoder, identity, fingerprint)
    shutil.rmtree(work)
    summary = _summary_from_index(out, already_complete=False)
    summary.resumed_shards = resumed
    return summary


def plan_shards(samples: list[Planned], config: BuildConfig, xvector_dim: int,
                text_tokenizer: Any = None) -> tuple[list[Shard], dict[str, Planned]]:
    """Splits, references, member json (with prompt ids when a text tokenizer is given) and the shard cut:
    everything decided before encoding."""
    assign_splits(samples, config)
    choose_references(samples, config.seed)
    by_key = {s.key: s for s in samples}
    for sample in samples:
        sample.meta = build_meta(sample, by_key, config.xvector_from)
    if text_tokenizer is not None:
        tokenize_prompts(samples, text_tokenizer, config.progress)
    return group_into_shards(samples, by_key, config, xvector_dim), by_key


def tokenize_prompts(samples: list[Planned], tokenizer: Any, progress: bool, chunk: int = 1024) -> None:
    """Every sample's target and reference prompt ids, tokenized in batches (a fast tokenizer encodes each item of
    a batch exactly as it encodes it alone; tests/data/test_build.py checks the stored ids against the layout)."""
    from tqdm import tqdm

    from ..layout import reference_prompt, target_prompt

    with tqdm(total=len(samples), desc="tokenize", unit="text", disable=not progress) as bar:
        for start in range(0, len(samples), chunk):
            group = samples[start:start + chunk]
            prompts = [target_prompt(s.meta["text"]) for s in group] + [reference_prompt(s.meta["text"]) for s in group]
            ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
            for sample, target, reference in zip(group, ids[:len(group)], ids[len(group):]):
                sample.prompt_ids = np.asarray(target, dtype=np.int32)
                sample.reference_prompt_ids = np.asarray(reference, dtype=np.int32)
            bar.update(len(group))


def member_meta(sample: Planned, by_key: dict[str, Planned]) -> dict[str, Any]:
    """The `<key>.json` member: the planned meta plus the prompt ids of the text and of the reference's text."""
    if sample.prompt_ids is None:
        return sample.meta
    meta = {**sample.meta, "prompt_ids": sample.prompt_ids.tolist()}
    if sample.meta.get("reference"):
        ids = by_key[sample.reference].reference_prompt_ids  # type: ignore[index]
        meta["reference"] = {**sample.meta["reference"], "prompt_ids": ids.tolist()}  # type: ignore[union-attr]
    return meta


def _check_plan(work: Path, shards: list[Shard], by_key: dict[str, Planned]) -> None:
    """Refuse to resume when the plan changed (e.g. files were added to a source folder): finished shards would
    then belong to another plan. The first run records the plan's digest."""
    plan = [[shard.stem, [by_key[key].meta for key in shard.keys]] for shard in shards]
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    path = work / "plan.sha256"
    if path.exists() and path.read_text(encoding="utf-8").strip() != digest:
        raise BuildError(f"{work.parent}: the sources changed since the interrupted build was planned (other "
                         "utterances, texts or audio); rerun with --restart to build from scratch")
    write_text_atomic(path, digest)


def _encode_and_write(shards: list[Shard], by_key: dict[str, Planned], encoder: Any, pool: WorkerPool, work: Path,
                      out: Path, config: BuildConfig) -> int:
    """Stages 4 and 5, skipping what an earlier run finished; returns how many shards were already complete."""
    from tqdm import tqdm

    crash = _CrashSwitch()
    encoded = work / "encoded"
    encoded.mkdir(exist_ok=True)
    cache_name = {shard.stem: shard.stem.replace("/", "_") for shard in shards}
    pending = [s for s in shards if not shard_is_complete(out, s)]
    # References may sit in any shard, so every missing encoding is made before the first pending shard is written.
    to_encode = [s for s in shards if pending and not EncodedCache.is_encoded(encoded / cache_name[s.stem])]
    with tqdm(total=sum(len(s.keys) for s in to_encode), desc="encode", unit="clip",
              disable=not config.progress or not to_encode) as bar:
        for shard in to_encode:
            encode_shard(shard, by_key, encoder, pool, encoded / cache_name[shard.stem],
                         config.encode_batch_seconds, bar)
            crash.step_done()
    cache = EncodedCache(encoded, {key: cache_name[s.stem] for s in shards for key in s.keys})
    try:
        for shard in tqdm(pending, desc="write shards", unit="shard", disable=not config.progress or not pending):
            write_shard(shard, by_key, cache, out, encoder.xvector_dim)
            crash.step_done()
    finally:
        cache.close()
    return len(shards) - len(pending)


def _finish(out: Path, samples: list[Planned], shards: list[Shard], by_key: dict[str, Planned],
            rejections: list[dict[str, Any]], encoder: Any, identity: dict[str, Any], fingerprint: str) -> None:
    from .report import write_report

    rejections = sorted(rejections, key=lambda r: (r["source"], r["reason"], r["detail"]))
    write_text_atomic(out / REJECTIONS_NAME,
                      "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rejections))
    splits = [split for split in SPLITS if any(s.split == split for s in shards)]
    index = {
        "format": FORMAT, "num_code_groups": NUM_CODE_GROUPS, "xvector_dim": encoder.xvector_dim,
        "frame_rate": FRAME_RATE, "sample_rate": SAMPLE_RATE,
        "splits": {split: [shard_record(out, s, by_key) for s in shards if s.split == split] for split in splits},
        "stats": {split: split_stats(samples, split) for split in splits},
        "rejections": dict(sorted(Counter(r["reason"] for r in rejections).items())),
        "rejections_file": REJECTIONS_NAME,
        "build": identity, "build_fingerprint": fingerprint,
        "codec": {**encoder.describe(), "fingerprint": identity["fingerprints"]["codec"]},
        "model": {"path": identity["model"], "fingerprint": identity["fingerprints"]["model"]},
        **_text_tokenizer_record(getattr(encoder, "text_tokenizer", None)),
        "versions": package_versions(),
        "split_rule": ("speakers ranked by sha1(seed:speaker:name); the first --eval-speakers (or --eval-fraction of "
                       "them) are eval; --eval-utterances-per-speaker of each other speaker ranked by "
                       "sha1(seed:utterance:key) also go to eval"),
    }
    write_report(out, index, samples, rejections)
    write_json_atomic(out / INDEX_NAME, index)  # two-space indents, sorted keys, UTF-8, final newline


def _text_tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    """index.json's `text_tokenizer`: the fingerprint the stored prompt ids are valid for (see shard_format)."""
    if tokenizer is None:
        return {}
    from ..layout import tokenizer_fingerprint

    return {"text_tokenizer": {"fingerprint": tokenizer_fingerprint(tokenizer), "class": type(tokenizer).__name__,
                               "prompts": "qwen_swe.layout.target_prompt / reference_prompt"}}


def _prepare_output(out: Path, identity: dict[str, Any], fingerprint: str) -> Optional[Path]:
    """The work folder to use (a fresh or resumable build), or None when OUT already holds this very build."""
    work = out / WORK_DIR
    index_path = out / INDEX_NAME
    if index_path.exists():  # index.json is written last: the build finished
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("build_fingerprint") == fingerprint:
            if work.exists():
                shutil.rmtree(work)  # stopped between index.json and the clean-up
            return None
        differences = _differences(index.get("build", {}), identity)
        raise BuildError(f"{out}: holds a finished build with other settings ({differences}); "
                         "write to a new folder, or pass --restart to replace it")
    config_path = work / "config.json"
    if work.exists() and config_path.exists():
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        if saved.get("fingerprint") != fingerprint:
            raise BuildError(f"{out}: holds an unfinished build with other settings "
                             f"({_differences(saved.get('identity', {}), identity)}); rerun with the same settings to "
                             "resume it, or pass --restart to start over")
        return work
    if out.exists() and any(p.name != WORK_DIR for p in out.iterdir()):
        raise BuildError(f"{out}: not empty and not a shard build; choose a new output folder")
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_path, json.dumps({"fingerprint": fingerprint, "identity": identity}, indent=2,
                                              sort_keys=True))
    return work


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> str:
    names = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    return "differs in " + ", ".join(names) if names else "another fingerprint"


def remove_build_outputs(out: Path) -> None:
    """Delete what a build writes in OUT (and nothing else)."""
    for name in (INDEX_NAME, REJECTIONS_NAME, "report.md", "durations.png"):
        (out / name).unlink(missing_ok=True)
    for name in ("train", "eval", WORK_DIR):
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def _summary_from_index(out: Path, already_complete: bool) -> BuildSummary:
    index = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    splits = {name: index["splits"][name] for name in SPLITS if name in index["splits"]}  # train first
    return BuildSummary(out=str(out), samples={k: sum(s["samples"] for s in v) for k, v in splits.items()},
                        shards={k: len(v) for k, v in splits.items()}, rejected=index["rejections"],
                        already_complete=already_complete)

