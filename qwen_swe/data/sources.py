"""Where utterances come from: JSONL manifests, Hugging Face datasets (saved to disk, parquet, arrow) and folders.

Every source yields `SourceItem`s: a stable source id (what the sample key is derived from), the raw transcript,
speaker, language, extra metadata and an `AudioRef` that a worker process can decode on its own. A problem found
while reading a source (a bad manifest line, a transcript that is not UTF-8, an audio file that does not exist) is
carried on the item as (reason, detail) so the builder writes it to rejections.jsonl instead of dropping it.

Hugging Face datasets are read without their Audio feature decoding (datasets 5 decodes audio through torchcodec):
an Audio column is cast to Audio(decode=False), which yields {"bytes", "path"}, and soundfile decodes the bytes.
Everything stays offline (HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 unless already set).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..model_shapes import SAMPLE_RATE
from .audio import Audio

SOURCE_KINDS = ("manifest", "hf_disk", "parquet", "arrow", "folder", "tsv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
FULL_SCALE = 0.999  # |x| at or above this counts as clipped

# Default column names per source kind; the --*-column flags override them.
DEFAULT_COLUMNS = {
    "hf": {"audio": "audio", "text": "text", "speaker": "speaker", "language": "language"},
    "tsv": {"audio": "path", "text": "text", "speaker": "speaker", "language": "language"},
}


class AudioProblem(Exception):
    """Audio that cannot become a sample: `reason` is a rejection code, `detail` says what and where."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Columns:
    """Column names for tabular sources; None means "the kind's default, if the table has it"."""

    audio: Optional[str] = None
    text: Optional[str] = None
    speaker: Optional[str] = None
    id: Optional[str] = None
    language: Optional[str] = None


@dataclass(frozen=True)
class SourceSpec:
    """One source as the user named it. Frozen and picklable: worker processes reopen datasets from it."""

    kind: str
    path: str
    columns: Columns = Columns()
    hf_split: Optional[str] = None  # which split of a DatasetDict (or of a parquet/arrow folder)
    # Folder sources: the speaker of every file (instead of the parent folder's name); other sources: the speaker
    # of items that name none (e.g. NST's single voice).
    speaker: Optional[str] = None
    audio_root: Optional[str] = None  # relative audio paths resolve here (default: next to the source)
    cache_dir: Optional[str] = None  # datasets' cache for parquet/arrow conversion (default: HF_DATASETS_CACHE)

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; choose from {', '.join(SOURCE_KINDS)}")

    @property
    def label(self) -> str:
        """Short, location-independent name used in source ids: the last two path components."""
        parts = Path(self.path).parts
        return "/".join(parts[-2:]) if len(parts) >= 2 else parts[-1]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "columns": {k: v for k, v in vars(self.columns).items() if v},
                "hf_split": self.hf_split, "speaker": self.speaker, "audio_root": self.audio_root}


@dataclass(frozen=True)
class AudioRef:
    """How to get one utterance's audio: a file path, or row `row` of a dataset source."""

    path: Optional[str] = None
    source: Optional[SourceSpec] = None
    row: int = -1

    def describe(self) -> str:
        return self.path if self.path else f"{self.source.path if self.source else '?'} row {self.row}"


@dataclass
class SourceItem:
    source_id: str
    text: Optional[str]
    speaker: Optional[str]
    language: Optional[str]
    audio: Optional[AudioRef]
    extra: dict[str, Any] = field(default_factory=dict)
    problem: Optional[tuple[str, str]] = None  # (reason, detail) found while reading the source


# ------------------------------------------------------------------------------------------------ reading


def read_source(spec: SourceSpec) -> Iterator[SourceItem]:
    """Every item of one source, in the source's own order."""
    readers = {"manifest": read_manifest_items, "hf_disk": read_dataset_items, "parquet": read_dataset_items,
               "arrow": read_dataset_items, "folder": read_folder_items, "tsv": read_tsv_items}
    yield from readers[spec.kind](spec)


def read_manifest_items(spec: SourceSpec) -> Iterator[SourceItem]:
    """JSONL as the public Qwen3-TTS fine-tune format: audio (relative to the manifest), text, optional speaker,
    language, ref_audio and id; every other field is kept in `extra` (ref_audio too: it is not encoded)."""
    path = Path(spec.path)
    root = Path(spec.audio_root) if spec.audio_root else path.parent
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        line_id = f"{spec.label}:line{number}"
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark, as some Windows editors write
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            yield _problem(line_id, "bad_text_encoding", f"{path}:{number}: not UTF-8 (byte {error.start})")
            continue
        except json.JSONDecodeError as error:
            yield _problem(line_id, "bad_record", f"{path}:{number}: not valid JSON ({error.msg})")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("audio"), str) or not record["audio"]:
            yield _problem(line_id, "bad_record", f"{path}:{number}: needs a string field 'audio'")
            continue
        audio = record.pop("audio")
        item_id = str(record.pop("id", audio))
        text = record.pop("text", None)
        yield SourceItem(
            source_id=f"{spec.label}:{item_id}", text=text if isinstance(text, str) else None,
            speaker=_optional_str(record.pop("speaker", None)) or spec.speaker,
            language=_optional_str(record.pop("language", None)),
            audio=AudioRef(path=str(_resolve(root, audio))), extra=record,
        )


def read_folder_items(spec: SourceSpec) -> Iterator[SourceItem]:
    """Audio files with a same-stem .txt transcript beside them; speaker = parent folder name (or --speaker)."""
    root = Path(spec.path)
    audio_files: dict[Path, Path] = {}
    transcripts: dict[Path, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        stem = path.relative_to(root).with_suffix("")
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            audio_files[stem] = path
        elif path.suffix.lower() == ".txt":
            transcripts[stem] = path
    for stem in sorted(set(audio_files) | set(transcripts)):
        audio, transcript = audio_files.get(stem), transcripts.get(stem)
        relative = (audio or transcript).relative_to(root).as_posix()  # type: ignore[union-attr]
        source_id = f"{spec.label}:{relative}"
        if audio is None:
            yield _problem(source_id, "missing_audio", f"{transcript}: transcript without an audio file "
                           f"(expected {stem.name} with one of {', '.join(AUDIO_EXTENSIONS)})")
            continue
        if transcript is None:
            yield _problem(source_id, "missing_text", f"{audio}: no transcript {audio.with_suffix('.txt').name}")
            continue
        speaker = spec.speaker or (audio.parent.name if audio.parent != root else root.name)
        item = SourceItem(source_id=source_id, text=None, speaker=speaker, language=None,
                          audio=AudioRef(path=str(audio)))
        try:
            from .text import decode_transcript

            item.text = decode_transcript(transcript.read_bytes(), str(transcript))
        except ValueError as error:
            item.problem = ("bad_text_encoding", str(error))
        yield item


def read_tsv_items(spec: SourceSpec) -> Iterator[SourceItem]:
    """A tab-separated table with a header: path, text, optional speaker (Common Voice: --text-column sentence
    --speaker-column client_id). Quotes are literal (Common Voice sentences contain them)."""
    path = Path(spec.path)
    root = Path(spec.audio_root) if spec.audio_root else path.parent
    lines = path.read_bytes().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty table; expected a header line with columns path and text")
    try:
        header = next(csv.reader([lines[0].decode("utf-8-sig")], delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: the header line is not UTF-8; re-save the table as UTF-8") from error
    names = _tsv_columns(spec, header, path)
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        line_id = f"{spec.label}:line{number}"
        try:
            values = next(csv.reader([raw.decode("utf-8")], delimiter="\t", quoting=csv.QUOTE_NONE))
        except UnicodeDecodeError as error:
            yield _problem(line_id, "bad_text_encoding", f"{path}:{number}: not UTF-8 (byte {error.start})")
            continue
        row = dict(zip(header, values))
        audio = row.get(names["audio"], "")
        if not audio:
            yield _problem(line_id, "bad_record", f"{path}:{number}: column {names['audio']!r} is empty")
            continue
        item_id = row.get(names["id"]) if names.get("id") else audio
        used = {v for v in names.values() if v}
        yield SourceItem(
            source_id=f"{spec.label}:{item_id}", text=row.get(names["text"]),
            speaker=_optional_str(row.get(names["speaker"] or "")) or spec.speaker,
            language=_optional_str(row.get(names["language"] or "")),
            audio=AudioRef(path=str(_resolve(root, audio))),
            extra={k: v for k, v in row.items() if k not in used},
        )


def _tsv_columns(spec: SourceSpec, header: list[str], path: Path) -> dict[str, Optional[str]]:
    return _resolve_columns(spec, set(header), DEFAULT_COLUMNS["tsv"], f"{path} (columns: {', '.join(header)})")


def _resolve_columns(spec: SourceSpec, available: set[str], defaults: dict[str, str],
                     where: str) -> dict[str, Optional[str]]:
    """Chosen column names; a column asked for by flag must exist, a default one is used only when present."""
    names: dict[str, Optional[str]] = {}
    for role in ("audio", "text", "speaker", "language", "id"):
        asked = getattr(spec.columns, role)
        if asked is not None and asked not in available:
            raise ValueError(f"{where}: no column {asked!r} for --{role}-column")
        default = defaults.get(role)
        names[role] = asked or (default if default in available else None)
    for role in ("audio", "text"):
        if names[role] is None:
            raise ValueError(f"{where}: no {role} column (looked for {defaults[role]!r}); "
                             f"name it with --{role}-column")
    return names


# ----------------------------------------------------------------------------------- Hugging Face datasets


_OPEN_DATASETS: dict[SourceSpec, Any] = {}


def _offline_datasets() -> Any:
    """Import datasets with the Hub switched off: a source is a local folder, never a download."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    return datasets


def open_dataset(spec: SourceSpec) -> Any:
    """The source as one `datasets.Dataset` with any Audio column cast to decode=False (cached per process)."""
    if spec in _OPEN_DATASETS:
        return _OPEN_DATASETS[spec]
    datasets = _offline_datasets()
    path = Path(spec.path)
    if spec.kind == "hf_disk":
        loaded = datasets.load_from_disk(str(path))
    else:
        suffix = ".parquet" if spec.kind == "parquet" else ".arrow"
        files = [str(path)] if path.is_file() else sorted(str(p) for p in path.rglob(f"*{suffix}"))
        if not files:
            raise ValueError(f"{path}: no *{suffix} files; pass the folder that holds them")
        loaded = datasets.load_dataset(spec.kind, data_files={"train": files}, cache_dir=spec.cache_dir)
    dataset = _pick_split(loaded, spec)
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Audio):
            dataset = dataset.cast_column(name, datasets.Audio(decode=False))
    _OPEN_DATASETS[spec] = dataset
    return dataset


def _pick_split(loaded: Any, spec: SourceSpec) -> Any:
    if not hasattr(loaded, "keys"):  # a Dataset, not a DatasetDict
        return loaded
    splits = list(loaded.keys())
    if spec.hf_split:
        if spec.hf_split not in splits:
            raise ValueError(f"{spec.path}: no split {spec.hf_split!r}; it has {', '.join(splits)} (--hf-split)")
        return loaded[spec.hf_split]
    if len(splits) == 1:
        return loaded[splits[0]]
    if "train" in splits:
        return loaded["train"]
    raise ValueError(f"{spec.path}: several splits ({', '.join(splits)}); choose one with --hf-split")


def read_dataset_items(spec: SourceSpec) -> Iterator[SourceItem]:
    """Rows of a dataset source. Only the small columns are materialised here; audio is read by the workers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = open_dataset(spec)
    names = _resolve_columns(spec, set(dataset.column_names), DEFAULT_COLUMNS["hf"],
                             f"{spec.path} (columns: {', '.join(dataset.column_names)})")
    table = dataset.with_format("arrow")[:]  # memory-mapped: no copy of the audio bytes
    audio_column = table.column(names["audio"])
    audio_paths: list[Optional[str]]
    if pa.types.is_struct(audio_column.type):
        has_path = audio_column.type.get_field_index("path") >= 0
        audio_paths = pc.struct_field(audio_column, "path").to_pylist() if has_path else [None] * len(table)
    elif pa.types.is_string(audio_column.type) or pa.types.is_large_string(audio_column.type):
        audio_paths = audio_column.to_pylist()
    else:
        raise ValueError(f"{spec.path}: audio column {names['audio']!r} has type {audio_column.type}; expected a "
                         "path string, {bytes, path} or {array, sampling_rate}")
    texts = table.column(names["text"]).to_pylist()
    speakers = table.column(names["speaker"]).to_pylist() if names["speaker"] else [None] * len(table)
    languages = table.column(names["language"]).to_pylist() if names["language"] else [None] * len(table)
    ids = table.column(names["id"]).to_pylist() if names["id"] else [None] * len(table)
    used = {v for v in names.values() if v}
    extra_columns = [n for n in table.column_names if n not in used and _is_scalar(table.schema.field(n).type)]
    extras = {n: table.column(n).to_pylist() for n in extra_columns}
    for row in range(len(table)):
        item_id = ids[row] if ids[row] is not None else (audio_paths[row] or f"row{row:09d}")
        yield SourceItem(
            source_id=f"{spec.label}:{item_id}", text=texts[row] if isinstance(texts[row], str) else None,
            speaker=_optional_str(speakers[row]) or spec.speaker, language=_optional_str(languages[row]),
            audio=AudioRef(source=spec, row=row), extra={n: values[row] for n, values in extras.items()},
        )


def _is_scalar(arrow_type: Any) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_integer(arrow_type)
            or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type))


# ---------------------------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    audio: Audio  # 24 kHz mono float32
    clipped_fraction: float  # share of source samples at |x| >= FULL_SCALE, measured before resampling


def decode_audio(ref: AudioRef) -> Decoded:
    """Decode one utterance to 24 kHz mono; AudioProblem (missing_audio, unreadable_audio, empty_audio) otherwise."""
    if ref.path is not None:
        return _decode_file(ref.path)
    assert ref.source is not None
    dataset = open_dataset(ref.source)
    column = _resolve_columns(ref.source, set(dataset.column_names), DEFAULT_COLUMNS["hf"], ref.source.path)["audio"]
    value = dataset[ref.row][column]
    where = f"{ref.source.path} row {ref.row} column {column!r}"
    if value is None:
        raise AudioProblem("missing_audio", f"{where}: no audio")
    if isinstance(value, str):
        root = Path(ref.source.audio_root) if ref.source.audio_root else Path(ref.source.path)
        return _decode_file(str(_resolve(root, value)))
    if isinstance(value, dict) and value.get("array") is not None:
        rate = value.get("sampling_rate")
        if not rate:
            raise AudioProblem("unreadable_audio", f"{where}: an 'array' without 'sampling_rate'")
        return audio_from_array(np.asarray(value["array"]), int(rate), where, channels_first=True)
    if isinstance(value, dict) and value.get("bytes"):
        return _decode_bytes(value["bytes"], where)
    if isinstance(value, dict) and value.get("path"):
        root = Path(ref.source.audio_root) if ref.source.audio_root else Path(ref.source.path)
        return _decode_file(str(_resolve(root, value["path"])))
    raise AudioProblem("missing_audio", f"{where}: neither bytes, array nor path")


def _decode_file(path: str) -> Decoded:
    if not os.path.exists(path):
        raise AudioProblem("missing_audio", f"{path}: no such file")
    return _decode_with_soundfile(path, path)


def _decode_bytes(data: bytes, where: str) -> Decoded:
    return _decode_with_soundfile(io.BytesIO(data), where)


def _decode_with_soundfile(handle: Any, where: str) -> Decoded:
    import soundfile

    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises its own error types
        raise AudioProblem("unreadable_audio", f"{where}: cannot decode audio ({error})") from error
    return audio_from_array(data, int(rate), where)


def audio_from_array(data: np.ndarray, rate: int, where: str, channels_first: bool = False) -> Decoded:
    """Fold to mono and resample to 24 kHz exactly as `audio.load_audio` does (soxr VHQ); measure clipping first.

    Accepts [samples] or [samples, channels] (soundfile's layout), or [channels, samples] with channels_first
    (Hugging Face's layout for multichannel arrays); integer PCM is scaled to [-1, 1).
    """
    import soxr

    data = np.asarray(data)
    if data.dtype.kind in "iu":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = data.astype(np.float32, copy=False)
    if data.ndim == 1:
        data = data[:, None]
    elif data.ndim == 2 and channels_first:
        data = data.T
    if data.ndim != 2:
        raise AudioProblem("unreadable_audio", f"{where}: audio array has shape {list(data.shape)}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioProblem("empty_audio", f"{where}: the audio holds no samples")
    if not np.isfinite(data).all():
        raise AudioProblem("unreadable_audio", f"{where}: the audio contains NaN or inf")
    clipped = float(np.mean(np.abs(data) >= FULL_SCALE))
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ")
    audio = Audio(samples=np.ascontiguousarray(mono, dtype=np.float32), original_rate=rate,
                  original_channels=int(data.shape[1]))
    return Decoded(audio=audio, clipped_fraction=clipped)


# ------------------------------------------------------------------------------------------------ helpers


def _problem(source_id: str, reason: str, detail: str) -> SourceItem:
    return SourceItem(source_id=source_id, text=None, speaker=None, language=None, audio=None,
                      problem=(reason, detail))


def _optional_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path
