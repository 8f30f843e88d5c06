"""data/stream.py: each sample once per epoch across ranks and workers, batches within the frame budget, exact
resume, bad data handled, and built shards read (or refused, or retokenized) under the layout's tokenizer."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil

import pytest
import torch

from qwen_swe.data.shard_format import INDEX_NAME
from qwen_swe.data.stream import (ShardIndex, ShardStream, StreamConfig, StreamPosition, make_loader, plan_epoch,
                                  sample_keys)
from qwen_swe.data.synthetic import synthetic_shards

from .building import swedish_layout

LAYOUT_MIX = {"streaming": 1.0, "non_streaming": 1.0, "icl": 1.0}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("shards"), shards=3, per_shard=23, eval_samples=5)


def read_all(index, layout, rank, world, workers, epoch=0, start=0, config=None):
    stream = ShardStream(index, layout, config or StreamConfig(frame_budget=160, layouts=LAYOUT_MIX), epoch=epoch,
                         start=start, rank=rank, world_size=world)
    return list(make_loader(stream, num_workers=workers, prefetch_factor=2))


def test_two_ranks_two_workers_see_every_sample_exactly_once(shards, layout):
    index = ShardIndex(shards, "train")
    per_rank = [read_all(index, layout, rank, 2, workers=2) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])  # ranks take the same number of steps
    keys = sample_keys(per_rank[0]) + sample_keys(per_rank[1])
    everything = [e["key"] for shard in index.shards for e in shard.entries]
    assert sorted(keys) == sorted(everything) and len(set(keys)) == len(keys) == 69
    layouts_used = {b.extra["layout"] for batches in per_rank for b in batches}
    assert layouts_used == set(LAYOUT_MIX)
    # a new epoch is shuffled differently but again complete
    epoch1 = sample_keys(read_all(index, layout, 0, 2, workers=2, epoch=1)) + \
        sample_keys(read_all(index, layout, 1, 2, workers=2, epoch=1))
    assert sorted(epoch1) == sorted(everything) and epoch1 != keys


def test_batches_stay_within_the_frame_budget_and_pad_little(shards):
    index = ShardIndex(shards, "train")
    batches = plan_epoch(index, seed=0, epoch=0, frame_budget=160)
    real = padded = 0
    for batch in batches:
        longest = max(r.cost for r in batch)
        assert longest * len(batch) <= 160 or len(batch) == 1
        real += sum(r.cost for r in batch)
        padded += longest * len(batch)
    assert real / padded > 0.85


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_yields_exactly_the_remaining_batches(shards, layout, workers):
    index = ShardIndex(shards, "train")
    full = read_all(index, layout, rank=1, world=2, workers=workers)
    stop = random.Random(workers).randrange(1, len(full) - 1)
    resumed = read_all(index, layout, rank=1, world=2, workers=workers, start=stop)
    assert [b.keys for b in resumed] == [b.keys for b in full[stop:]]
    assert [b.extra["layout"] for b in resumed] == [b.extra["layout"] for b in full[stop:]]
    for a, b in zip(resumed, full[stop:]):
        assert a.frames.equal(b.frames) and a.text_ids.equal(b.text_ids)


def test_changed_world_size_is_refused_unless_resharded(shards, layout):
    index = ShardIndex(shards, "train")
    config = StreamConfig(frame_budget=160, layouts=LAYOUT_MIX)
    old = [ShardStream(index, layout, config, rank=r, world_size=2) for r in range(2)]
    saved = old[0].position(batches_done=4)
    new = [ShardStream(index, layout, config, rank=r, world_size=3) for r in range(3)]
    with pytest.raises(ValueError, match="world_size: saved 2, now 3"):
        saved.resume_start(new[0].position(0))
    epoch, start = saved.resume_start(new[0].position(0), allow_reshard=True)
    assert (epoch, start) == (0, 3)  # 8 global batches consumed -> next multiple of 3 is 9: one batch skipped
    seen = [k for s in old for b in s.plan[:4] for k in (r.entry for r in b)]
    later = [(r.shard, r.entry) for s in new for b in s.plan[start:] for r in b]
    before = {(r.shard, r.entry) for s in old for b in s.plan[:4] for r in b}
    assert not before & set(later) and len(later) == len(set(later)) and seen
    state = StreamPosition.from_state_dict(json.loads(json.dumps(saved.state_dict())))
    assert state == saved


def test_more_workers_than_shards_and_a_single_shard(tmp_path, layout):
    root = synthetic_shards(tmp_path, shards=1, per_shard=9)
    index = ShardIndex(root, "train")
    batches = read_all(index, layout, rank=0, world=1, workers=4)
    assert sorted(sample_keys(batches)) == sorted(e["key"] for e in index.shards[0].entries)


def test_empty_eval_split_is_a_clear_error(tmp_path):
    root = synthetic_shards(tmp_path, shards=1, per_shard=4, eval_samples=0)
    with pytest.raises(ValueError, match="split 'eval' has no samples"):
        ShardIndex(root, "eval")
    with pytest.raises(ValueError, match="no shard index here"):
        ShardIndex(tmp_path / "nowhere", "train")


def corrupt_member(index: ShardIndex, shard: int, entry: int, member: str, data: bytes) -> str:
    info = index.shards[shard]
    offset, size = info.entries[entry]["members"][member]
    raw = bytearray(info.path.read_bytes())
    raw[offset:offset + size] = data.ljust(size, b"\0")[:size]
    info.path.write_bytes(bytes(raw))
    return info.entries[entry]["key"]


def test_bad_samples_are_skipped_with_their_shard_and_key_or_fail(tmp_path, layout, caplog):
    root = synthetic_shards(tmp_path, shards=2, per_shard=6)
    index = ShardIndex(root, "train")
    bad_key = corrupt_member(index, 0, 2, "codes.npy", b"this is not an npy file")
    batches = read_all(index, layout, 0, 1, workers=0)
    reported = [b for batch in batches for b in batch.extra["bad_samples"]]
    assert [r["key"] for r in reported] == [bad_key] and "codes.npy" in reported[0]["error"]
    assert bad_key not in sample_keys(batches) and len(sample_keys(batches)) == 11
    assert bad_key in caplog.text
    with pytest.raises(ValueError, match=bad_key):
        read_all(index, layout, 0, 1, workers=0, config=StreamConfig(frame_budget=160, on_bad_sample="fail"))


def test_truncated_and_missing_shards_never_hang(tmp_path, layout):
    root = synthetic_shards(tmp_path, shards=2, per_shard=5)
    index = ShardIndex(root, "train")
    data = index.shards[0].path.read_bytes()
    index.shards[0].path.write_bytes(data[: len(data) // 3])
    index.shards[1].path.unlink()
    batches = read_all(index, layout, 0, 1, workers=2)
    reported = [b for batch in batches for b in batch.extra["bad_samples"]]
    assert len(reported) + len(sample_keys(batches)) == 10
    assert any("truncated" in r["error"] for r in reported)
    assert any("No such file" in r["error"] for r in reported)
    assert all(batch.is_empty == (not batch.keys) for batch in batches)


def test_shards_load_in_the_streaming_reader(reference_build):
    from qwen_swe.data.stream import ShardIndex, load_samples_by_key

    index = ShardIndex(reference_build, "train")
    keys = [e["key"] for shard in index.shards for e in shard.entries]
    loaded = load_samples_by_key(index, keys)
    assert len(loaded) == 6 and all(s.ref_codes is not None and s.ref_text for s in loaded)


def test_shards_from_another_tokenizer_are_refused_or_retokenized(reference_build, tiny_06b, tmp_path):
    from qwen_swe.data.stream import ShardIndex, ShardStream, StreamConfig

    layout = swedish_layout(tiny_06b)
    other = tmp_path / "other-tokenizer"
    shutil.copytree(reference_build, other)
    index = json.loads((other / INDEX_NAME).read_text(encoding="utf-8"))
    index["text_tokenizer"]["fingerprint"] = "0123456789abcdef"
    (other / INDEX_NAME).write_text(json.dumps(index), encoding="utf-8")
    config = StreamConfig(frame_budget=400, layouts={"icl": 1.0})
    with pytest.raises(ValueError, match="0123456789abcdef.*rebuild the shards with this model"):
        ShardStream(ShardIndex(other, "train"), layout, config)
    retokenized = list(ShardStream(ShardIndex(other, "train"), layout, dataclasses.replace(config, retokenize=True)))
    stored = list(ShardStream(ShardIndex(reference_build, "train"), layout, config))
    assert [b.keys for b in retokenized] == [b.keys for b in stored] and sum(len(b.keys) for b in stored) == 6
    assert all(torch.equal(a.text_ids, b.text_ids) for a, b in zip(retokenized, stored))
