"""data/shard_format.py: fixed tar headers, the reader's fast and field-by-field json paths, bad members named by key
and field, npy members read like np.load and never unpickled."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from qwen_swe.data.shard_format import ShardReader, decode_sample, encode_sample, npy_bytes


def test_every_built_sample_takes_the_readers_fast_json_path(reference_build):
    """The reader parses each sample's json with a typed msgspec decoder and falls back to field-by-field checks
    only when it refuses; what the builder writes must never need the slow path."""
    from qwen_swe.data.shard_format import _READER_FIELDS
    from qwen_swe.data.stream import ShardIndex

    with ShardReader() as reader:
        for split in ("train", "eval"):
            index = ShardIndex(reference_build, split)
            for shard in index.shards:
                for entry in shard.entries:
                    fields = _READER_FIELDS.decode(reader.read_member(shard.path, entry, "json"))
                    assert fields.text.strip() and fields.prompt_ids, entry["key"]


def test_shard_tar_headers_are_fixed(reference_build):
    with tarfile.open(reference_build / "train" / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "qwen-swe", 0o444)}
    assert [m.name.split(".", 1)[1] for m in members[:4]] == ["codes.npy", "json", "ref_codes.npy", "xvector.npy"]


@pytest.mark.parametrize("field, change, words", [
    ("codes.npy", lambda m: m.pop("codes.npy"), "'codes.npy' is missing"),
    ("codes.npy", lambda m: m.update({"codes.npy": npy_bytes(np.full((4, 16), 2048, dtype=np.int16))}),
     "outside 0..2047"),
    ("codes.npy", lambda m: m.update({"codes.npy": npy_bytes(np.zeros((4, 15), dtype=np.int16))}),
     "expected [frames, 16]"),
    ("xvector.npy", lambda m: m.update({"xvector.npy": npy_bytes(np.full(64, np.nan, dtype=np.float32))}),
     "NaN"),
    ("xvector.npy", lambda m: m.update({"xvector.npy": npy_bytes(np.zeros(63, dtype=np.float32))}),
     "expected [64]"),
    ("json", lambda m: m.update({"json": b"\xff\xfe not utf-8"}), "not UTF-8 JSON"),
    ("json", lambda m: m.update({"json": json.dumps({"text": "  "}).encode()}), "'text' is empty"),
    ("json", lambda m: m.update({"json": json.dumps({"text": "Hej", "prompt_ids": [5, -1]}).encode()}),
     "'prompt_ids' must be a list of token ids"),
    ("json", lambda m: m.update({"json": json.dumps({"text": "Hej", "reference": {"prompt_ids": "5"}}).encode()}),
     "'reference.prompt_ids' must be"),
    ("codes.npy", lambda m: m.update({"codes.npy": m["codes.npy"][:-2]}), "truncated"),
    ("json", lambda m: m.update({"json": b"[1, 2]"}), "not a JSON object"),
])
def test_each_bad_member_is_named_by_key_and_field(field, change, words):
    members = encode_sample("k1", {"text": "Hej"}, np.zeros((4, 16)), np.zeros(64))
    change(members)
    with pytest.raises(ValueError) as info:
        decode_sample("k1", members, xvector_dim=64)
    assert "'k1'" in str(info.value) and words in str(info.value), str(info.value)


def comparable(fields):
    """(text, language, prompt ids, reference text, reference prompt ids) with the id arrays as lists."""
    text, language, prompt_ids, (ref_text, ref_prompt_ids) = fields
    listed = [None if ids is None else ids.tolist() for ids in (prompt_ids, ref_prompt_ids)]
    return text, language, listed[0], ref_text, listed[1]


@pytest.mark.parametrize("meta", [
    {"text": "Hej"},
    {"text": "Hej på dig", "language": "swedish", "prompt_ids": [1, 2, 3], "speaker": "a", "extra": {"x": [1.5]}},
    {"text": "Hej", "language": None, "reference": {"key": "r", "text": "Ja.", "prompt_ids": [7, 8]}},
    {"text": "Hej", "reference": "not an object"},  # the typed parser refuses it; the field-by-field one ignores it
    {"text": "Hej", "language": 5},  # passed on as it is: the layout names an unknown language
])
def test_sample_json_reads_the_same_whichever_parser_reads_it(meta):
    """The typed parser (msgspec) is the fast path; the field-by-field one names problems. What one accepts, both
    read the same way, and the whole json stays available as `meta`."""
    from qwen_swe.data.shard_format import _read_json, _read_json_field_by_field

    data = json.dumps(meta, ensure_ascii=False).encode("utf-8")
    assert comparable(_read_json("k1", data)) == comparable(_read_json_field_by_field("k1", data))
    members = encode_sample("k1", meta, np.zeros((4, 16)), np.zeros(64), ref_codes=np.ones((2, 16)))
    sample = decode_sample("k1", members, xvector_dim=64)
    assert sample.meta == meta and sample.text == meta["text"]
    reference = meta.get("reference")
    assert sample.ref_text == (reference.get("text") if isinstance(reference, dict) else None)


@pytest.mark.parametrize("array", [
    np.arange(48, dtype=np.int16).reshape(3, 16), np.zeros((0, 16), dtype=np.int16), np.float32(np.arange(5)),
    np.asfortranarray(np.arange(12).reshape(3, 4)), np.arange(6, dtype=">i4").reshape(2, 3), np.array(2.5),
])
def test_npy_members_read_like_np_load(array):
    import io

    from qwen_swe.data.shard_format import read_npy

    data = npy_bytes(array)
    for _ in range(2):  # the second read uses the remembered header
        ours, theirs = read_npy(data), np.load(io.BytesIO(data), allow_pickle=False)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_npy_members_never_unpickle():
    import io

    from qwen_swe.data.shard_format import read_npy

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="no pickles"):
        read_npy(buffer.getvalue())


def test_changed_bytes_that_still_decode_are_caught_by_the_entry_checksums(tmp_path):
    """A sample whose codes were altered on disk but stay in range would train silently without checksums."""
    from qwen_swe.data.stream import ShardIndex
    from qwen_swe.data.synthetic import synthetic_shards
    from qwen_swe.data.verify import verify_shards

    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=3, eval_samples=0)
    shard = ShardIndex(shards, "train").shards[0]
    entry = shard.entries[1]
    assert set(entry["crc32"]) == set(entry["members"])
    offset, size = entry["members"]["codes.npy"]
    data = bytearray(shard.path.read_bytes())
    data[offset + size - 2:offset + size] = (7).to_bytes(2, "little")  # a valid code, different from the one built
    shard.path.write_bytes(bytes(data))

    with ShardReader() as reader:
        with pytest.raises(ValueError, match=rf"sample '{entry['key']}': the bytes of codes.npy changed since"):
            reader.read_sample(shard.path, entry)
        reader.read_sample(shard.path, shard.entries[0])  # its neighbours still read
        unchecked = {k: v for k, v in entry.items() if k != "crc32"}  # shards built before checksums
        assert reader.read_sample(shard.path, unchecked).codes[-1, -1] == 7
    problems = [str(problem) for problem in verify_shards(shards).problems]
    assert any(entry["key"] in problem and "checksum mismatch" in problem for problem in problems), problems
