"""The on-disk format of qwen-swe shards: what the builder writes and the reader, inspect and verify read.

A dataset folder holds
- ``index.json``: format version, code-group count, x-vector size, every split's shards (path, sample count, frames,
  seconds, bytes, sha256 of the tar and of its entry list), the build config, codec/model fingerprints, versions;
- ``<split>/<split>-NNNNNN.tar``: WebDataset tar shards (members ``<key>.<field>``, grouped by key), readable by any
  WebDataset pipeline;
- ``<split>/<split>-NNNNNN.entries.json``: one entry per sample in tar order: key, frames, reference frames, the
  byte offset and size of each member inside the tar, so the reader can plan batches from lengths alone and read a
  sample without scanning (let alone decoding) the ones before it, and each member's CRC-32 (``crc32``), which the
  reader checks on every read: bytes changed on disk become a counted bad sample instead of training silently
  (a CRC costs about a millisecond per megabyte; shards built before checksums have no ``crc32`` and are read as
  before).

Members of one sample (no pickles anywhere; arrays are plain .npy, never object arrays):
- ``<key>.json``: text, speaker, language, seconds, frames, original_rate, band_limited, source, extra, reference
  (key, text and prompt_ids of the ICL reference), prompt_ids
- ``<key>.codes.npy``: int16 [frames, 16] codec codes
- ``<key>.xvector.npy``: float32 [hidden] speaker-encoder output
- ``<key>.ref_codes.npy``: int16 [ref_frames, 16] codes of the same-speaker ICL reference (when there is one)

``prompt_ids`` are the text tokenizer's ids of the prompt string generate() tokenizes for the text
(`layout.target_prompt`, and `layout.reference_prompt` for the reference), so the reader never tokenizes. They are
valid only for the tokenizer whose fingerprint (`layout.tokenizer_fingerprint`) index.json records under
``text_tokenizer``; the reader refuses shards made with another tokenizer unless told to tokenize the text again.
Shards built before prompt ids existed have neither the fields nor ``text_tokenizer``: readers tokenize their text as
before, and readers that predate the fields ignore them, so the format version stays 1 in both directions.

Keys contain no dots (WebDataset splits member names at the first dot).

`ShardReader` is the one way the project reads samples back: by the offsets of the entry lists, never by scanning
a tar (the training stream, batch replay, `shards verify`, export's speaker means and eval references use it).
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, Sequence

import msgspec
import numpy as np

from ..model_shapes import CODEBOOK_SIZE, NUM_CODE_GROUPS

FORMAT = "qwen-swe-shards/1"
INDEX_NAME = "index.json"
FIELDS = ("json", "codes.npy", "xvector.npy", "ref_codes.npy")
REQUIRED_FIELDS = ("json", "codes.npy", "xvector.npy")


@dataclass
class ShardSample:
    """One decoded sample, as the reader hands it to the layout."""

    key: str
    text: str
    language: Optional[str]
    codes: np.ndarray  # int16 [T, 16]
    xvector: np.ndarray  # float32 [D]
    ref_codes: Optional[np.ndarray]  # int16 [R, 16] or None
    ref_text: Optional[str] = None  # the ICL reference's transcript (when the sample has reference codes)
    prompt_ids: Optional[np.ndarray] = None  # int64 token ids of the text's prompt (shards built with them)
    ref_prompt_ids: Optional[np.ndarray] = None  # int64 token ids of the reference text's prompt
    raw_json: bytes = b""  # the sample's `<key>.json` member

    @cached_property
    def meta(self) -> dict[str, Any]:
        """Every field of `<key>.json` (parsed on first use: the reader needs only the typed fields above)."""
        return json.loads(self.raw_json)


TokenId = Annotated[int, msgspec.Meta(ge=0, lt=2**31)]
PromptIds = Annotated[list[TokenId], msgspec.Meta(min_length=1)]


class _Reference(msgspec.Struct):
    text: Optional[str] = None
    prompt_ids: Optional[PromptIds] = None


class _ReaderFields(msgspec.Struct):
    """The fields of `<key>.json` the reader uses, type-checked while parsing (other fields are skipped)."""

    text: str
    language: Optional[str] = None
    prompt_ids: Optional[PromptIds] = None
    reference: Optional[_Reference] = None


_READER_FIELDS = msgspec.json.Decoder(_ReaderFields)


def codes_in_range(codes: np.ndarray) -> bool:
    """All codes within 0..CODEBOOK_SIZE-1, in one pass: viewed as unsigned numbers of the same width, a negative
    code is at least 2**15, so the unsigned maximum alone decides (every training sample is checked; two reductions
    cost twice as much)."""
    if codes.size == 0:
        return True
    if codes.dtype.kind == "i":
        if not codes.dtype.isnative or codes.dtype.itemsize < 2:
            return bool(codes.min() >= 0 and codes.max() < CODEBOOK_SIZE)
        codes = codes.view(f"u{codes.dtype.itemsize}")
    return int(codes.max()) < CODEBOOK_SIZE


def check_key(key: str) -> str:
    if not key or "." in key or "/" in key:
        raise ValueError(f"invalid sample key {key!r}: keys must be non-empty and contain no '.' or '/'")
    return key


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype, int]] = {}  # header -> shape, fortran, dtype, count


def read_npy(data: bytes) -> np.ndarray:
    """An .npy file's array, like np.load(allow_pickle=False), read-only and without copying the data.

    The header (magic, version, a Python-literal dict) is parsed by numpy's own parser once per distinct header and
    remembered: shards hold few distinct shapes, and parsing is most of np.load's cost for small arrays. Object
    arrays are refused (they would need pickles); the data must be exactly as long as the header says.
    """
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        raise ValueError("not an .npy file (no NUMPY magic)")
    if data[6] not in (1, 2):  # version 3 (UTF-8 field names) never comes from np.save of plain numbers
        return np.load(io.BytesIO(data), allow_pickle=False)
    start = 10 if data[6] == 1 else 12  # the header length takes 2 bytes in version 1, 4 in version 2
    end = start + int.from_bytes(data[8:start], "little")
    header = bytes(data[:end])
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        parsed = _parse_npy_header(header)
        if len(_NPY_HEADERS) < 4096:
            _NPY_HEADERS[header] = parsed
    shape, fortran, dtype, count = parsed
    if len(data) - end != count * dtype.itemsize:
        raise ValueError(f"{len(data) - end} data bytes for an array of shape {list(shape)} and dtype {dtype}, "
                         f"expected {count * dtype.itemsize} (truncated or corrupt)")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _parse_npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    from numpy.lib import format as npy_format

    stream = io.BytesIO(header)
    major, _ = npy_format.read_magic(stream)
    read_header = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    if dtype.hasobject:
        raise ValueError("the array holds Python objects; shards hold plain numbers only (no pickles)")
    return tuple(int(n) for n in shape), bool(fortran), dtype, int(np.prod(shape, dtype=np.int64))


def encode_sample(key: str, meta: dict[str, Any], codes: np.ndarray, xvector: np.ndarray,
                  ref_codes: Optional[np.ndarray] = None) -> dict[str, bytes]:
    """Member name suffix -> bytes, for one sample (the builder passes this to webdataset's TarWriter)."""
    check_key(key)
    members = {
        "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
        "codes.npy": npy_bytes(np.asarray(codes, dtype=np.int16)),
        "xvector.npy": npy_bytes(np.asarray(xvector, dtype=np.float32)),
    }
    if ref_codes is not None:
        members["ref_codes.npy"] = npy_bytes(np.asarray(ref_codes, dtype=np.int16))
    return members


def decode_sample(key: str, members: dict[str, bytes], xvector_dim: Optional[int] = None) -> ShardSample:
    """Decode and validate one sample; raise ValueError naming the key and the field."""
    for name in REQUIRED_FIELDS:
        if name not in members:
            raise ValueError(f"sample {key!r}: field {name!r} is missing")
    text, language, prompt_ids, reference = _read_json(key, members["json"])
    if not text.strip():
        raise ValueError(f"sample {key!r}: field 'text' is empty")
    codes = _read_codes(key, members["codes.npy"], "codes.npy")
    try:
        xvector = read_npy(members["xvector.npy"])
    except Exception as error:  # numpy raises several types for corrupt files
        raise ValueError(f"sample {key!r}: field 'xvector.npy' cannot be read ({error})") from error
    if xvector.ndim != 1 or (xvector_dim is not None and xvector.shape[0] != xvector_dim):
        raise ValueError(f"sample {key!r}: field 'xvector.npy' has shape {list(xvector.shape)}, "
                         f"expected [{xvector_dim}]")
    if not np.isfinite(xvector).all():
        raise ValueError(f"sample {key!r}: field 'xvector.npy' contains NaN or inf")
    ref_codes = ref_text = ref_prompt_ids = None
    if "ref_codes.npy" in members:
        ref_codes = _read_codes(key, members["ref_codes.npy"], "ref_codes.npy")
        ref_text, ref_prompt_ids = reference
    return ShardSample(key=key, text=text, language=language, codes=codes,
                       xvector=xvector.astype(np.float32, copy=False), ref_codes=ref_codes, ref_text=ref_text,
                       prompt_ids=prompt_ids, ref_prompt_ids=ref_prompt_ids, raw_json=members["json"])


def _read_json(key: str, data: bytes) -> tuple[str, Optional[str], Optional[np.ndarray], tuple]:
    """(text, language, prompt ids, (reference text, reference prompt ids)) of a sample's json member.

    msgspec parses and type-checks the fields in one pass (a few microseconds; the reader does this for every
    sample). Anything it refuses is parsed again with the json module and checked field by field, which names the
    problem, or accepts what the typed view is stricter about (a language or reference of another type, which the
    layout then reports or ignores).
    """
    try:
        fields = _READER_FIELDS.decode(data)
    except msgspec.DecodeError:
        return _read_json_field_by_field(key, data)
    reference = fields.reference or _Reference()
    return (fields.text, fields.language, _id_array(fields.prompt_ids),
            (reference.text, _id_array(reference.prompt_ids)))


def _id_array(ids: Optional[list[int]]) -> Optional[np.ndarray]:
    return None if ids is None else np.array(ids, dtype=np.int64)


def _read_json_field_by_field(key: str, data: bytes) -> tuple[str, Optional[str], Optional[np.ndarray], tuple]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"sample {key!r}: field 'json' is not UTF-8 JSON ({error})") from error
    if not isinstance(meta, dict):
        raise ValueError(f"sample {key!r}: field 'json' is not a JSON object")
    text = meta.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"sample {key!r}: field 'text' is empty")
    prompt_ids = _read_prompt_ids(key, meta.get("prompt_ids"), "prompt_ids")
    reference = meta.get("reference")
    ref_text, ref_prompt_ids = None, None
    if isinstance(reference, dict):
        ref_text = reference.get("text")
        ref_prompt_ids = _read_prompt_ids(key, reference.get("prompt_ids"), "reference.prompt_ids")
    return text, meta.get("language"), prompt_ids, (ref_text, ref_prompt_ids)


def _read_prompt_ids(key: str, ids: Any, field: str) -> Optional[np.ndarray]:
    """Stored prompt ids are optional; when present they are a non-empty list of non-negative integers."""
    if ids is None:
        return None
    array = np.array(ids) if isinstance(ids, list) else np.zeros(0)
    if array.ndim != 1 or not array.size or array.dtype.kind != "i" or array.min() < 0:
        raise ValueError(f"sample {key!r}: field {field!r} must be a list of token ids (non-negative integers); "
                         "rebuild the shards")
    return array.astype(np.int64, copy=False)


def _read_codes(key: str, data: bytes, field: str) -> np.ndarray:
    try:
        codes = read_npy(data)
    except Exception as error:  # numpy raises several types for corrupt files
        raise ValueError(f"sample {key!r}: field {field!r} cannot be read ({error})") from error
    if codes.ndim != 2 or codes.shape[1] != NUM_CODE_GROUPS or codes.shape[0] < 1:
        raise ValueError(f"sample {key!r}: field {field!r} has shape {list(codes.shape)}, "
                         f"expected [frames, {NUM_CODE_GROUPS}]")
    if codes.dtype.kind not in "iu":
        raise ValueError(f"sample {key!r}: field {field!r} has dtype {codes.dtype}, expected integers")
    if not codes_in_range(codes):
        raise ValueError(f"sample {key!r}: field {field!r} has codes outside 0..{CODEBOOK_SIZE - 1}")
    return codes


# --------------------------------------------------------------------------------------------- reading samples

def _member_span(members: Mapping[str, Sequence[int]]) -> tuple[int, int, Optional[list[tuple[str, int, int]]]]:
    """(first byte, length, [(name, start, end) within the span]) of a sample's members; parts None when the
    members lie so far apart that reading them one by one is cheaper."""
    spans = list(members.values())
    first = min(offset for offset, _ in spans)
    end = max(offset + size for offset, size in spans)
    if end - first > 2 * sum(size for _, size in spans) + 4096 * len(spans):
        return first, end - first, None
    return first, end - first, [(name, offset - first, offset - first + size)
                                for name, (offset, size) in members.items()]


def check_member_checksums(entry: Mapping[str, Any], members: Mapping[str, bytes]) -> None:
    """ValueError naming the sample and fields whose bytes differ from the CRC-32 the entry recorded at build time
    (nothing to check for entries written before checksums)."""
    recorded = entry.get("crc32")
    if not recorded:
        return
    changed = [field for field, data in members.items() if field in recorded and zlib.crc32(data) != recorded[field]]
    if changed:
        raise ValueError(f"sample {entry['key']!r}: the bytes of {', '.join(changed)} changed since the shard was "
                         "built (checksum mismatch: damaged or edited on disk); restore or rebuild the shard")


class TruncatedShard(ValueError):
    """A shard file ended before the bytes an entry list promises (`got` of `size` bytes at `offset`)."""

    def __init__(self, path: Path, offset: int, size: int, got: int):
        super().__init__(f"{path}: truncated (wanted {size} bytes at offset {offset}, got {got})")
        self.path, self.offset, self.size, self.got = path, offset, size, got


class ShardReader:
    """Reads samples out of shard tars by the byte offsets their `.entries.json` records, keeping a few shard files
    open (a DataLoader worker, an export or an eval makes one and reads many samples through it).

    `entry` arguments are items of an entry list: ``{"key": ..., "members": {field: [offset, size]}, ...}``; member
    fields are the suffixes of FIELDS ("json", "codes.npy", ...). Nothing here scans a tar.

    - `read_sample(path, entry, xvector_dim)`: the decoded, validated sample (`decode_sample`), what training reads;
    - `read_meta(path, entry)`: every field of the sample's `<key>.json` as a dict (no arrays read);
    - `read_array(path, entry, field)`: one .npy member as a read-only array (e.g. "xvector.npy"), not validated;
    - `read_member` / `read_members` / `read`: raw bytes of one member, of several, of any byte range.

    Use as a context manager, or call `close()`.
    """

    def __init__(self, keep_open: int = 4):
        self.keep_open = keep_open
        self.files: dict[Path, Any] = {}

    def read(self, path: Path, offset: int, size: int) -> bytes:
        """`size` bytes at `offset` of a shard file; TruncatedShard (a ValueError) when the file ends first."""
        handle = self.files.get(path)
        if handle is None:
            if len(self.files) >= self.keep_open:
                oldest = next(iter(self.files))
                self.files.pop(oldest).close()
            handle = self.files[path] = open(path, "rb")  # FileNotFoundError names the missing shard
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise TruncatedShard(path, offset, size, len(data))
        return data

    def read_members(self, path: Path, members: Mapping[str, Sequence[int]]) -> dict[str, bytes]:
        """Member field -> bytes, for an entry's `members`. A sample's members sit next to each other in the tar
        (with 512-byte headers in between), so they are read with one seek and one read when that span is not much
        larger than the members."""
        first, length, parts = _member_span(members)
        if parts is None:
            return {name: self.read(path, int(offset), int(size)) for name, (offset, size) in members.items()}
        block = self.read(path, first, length)
        return {name: block[start:end] for name, start, end in parts}

    def read_member(self, path: Path, entry: Mapping[str, Any], field: str) -> bytes:
        """The bytes of one member (`field` as in FIELDS) of the entry's sample."""
        members = entry["members"]
        if field not in members:
            raise ValueError(f"sample {entry['key']!r}: field {field!r} is missing")
        offset, size = members[field]
        return self.read(path, int(offset), int(size))

    def read_meta(self, path: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Every field of the sample's `<key>.json` member (speaker, seconds, source, ...)."""
        return json.loads(self.read_member(path, entry, "json").decode("utf-8"))

    def read_array(self, path: Path, entry: Mapping[str, Any], field: str) -> np.ndarray:
        """One .npy member as a read-only array (`read_npy`); use `read_sample` for the checked sample."""
        return read_npy(self.read_member(path, entry, field))

    def read_sample(self, path: Path, entry: Mapping[str, Any], xvector_dim: Optional[int] = None) -> ShardSample:
        """The entry's sample, checked against its recorded checksums, decoded and validated (ValueError names the
        key and the field)."""
        members = self.read_members(path, entry["members"])
        check_member_checksums(entry, members)
        return decode_sample(entry["key"], members, xvector_dim)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files.clear()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


# ------------------------------------------------------------------ helpers shared by the builder and verify

ENTRIES_SUFFIX = ".entries.json"
SPLITS = ("train", "eval")


def shard_stem(split: str, number: int) -> str:
    """`<split>/<split>-NNNNNN`: the tar is this plus `.tar`, its entry list this plus ENTRIES_SUFFIX."""
    return f"{split}/{split}-{number:06d}"


def split_member_name(name: str) -> tuple[str, str]:
    """`<key>.<field>` -> (key, field), split at the first dot as WebDataset does."""
    key, dot, field = name.partition(".")
    if not dot or not key:
        raise ValueError(f"tar member {name!r} is not named <key>.<field>")
    return key, field


def scan_tar_entries(path: Any) -> list[dict[str, Any]]:
    """Entries (key, [offset, size] and CRC-32 of each member) in tar order, read from the tar itself.

    The sizes, offsets and checksums come from the finished file, so they are right by construction. Raises ValueError
    naming the file when it is not a readable tar or a member's data runs past the end of the file.
    """
    import os
    import tarfile

    size = os.path.getsize(path)
    entries: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise ValueError(f"{path}: member {member.name!r} is not a regular file")
                if member.offset_data + member.size > size:
                    raise ValueError(f"{path}: member {member.name!r} runs past the end of the file (truncated)")
                key, field = split_member_name(member.name)
                entry = entries.setdefault(key, {"key": key, "members": {}, "crc32": {}})
                if field in entry["members"]:
                    raise ValueError(f"{path}: member {member.name!r} appears twice")
                entry["members"][field] = [member.offset_data, member.size]
                entry["crc32"][field] = zlib.crc32(tar.extractfile(member).read())
    except tarfile.TarError as error:
        raise ValueError(f"{path}: not a readable tar ({error})") from error
    return list(entries.values())
