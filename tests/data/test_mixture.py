"""data/mixture.py: several sources mixed by their weights' share of the frames, on a schedule by optimizer step,
over ranks and loader workers, with each source read through before it repeats and a plan that a resume rebuilds."""

from __future__ import annotations

import pytest

from qwen_swe.data.mixture import DrawnBatch, MixedIndex, MixturePlanner, MixtureSchedule
from qwen_swe.data.stream import ShardStream, StreamConfig, StreamPosition, make_loader, stream_position
from qwen_swe.data.synthetic import synthetic_shards

NAMES = ("studio", "varied")


def frame_shares(plan: list[DrawnBatch], names: list[str]) -> dict[str, float]:
    """Each source's share of the frames of `plan` (what the weights promise)."""
    frames = dict.fromkeys(names, 0.0)
    for batch in plan:
        frames[names[batch.source]] += sum(ref.cost for ref in batch.refs)
    total = sum(frames.values()) or 1.0
    return {name: value / total for name, value in frames.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two sources of different sizes and clip lengths (the varied one's clips are twice as long)."""
    root = tmp_path_factory.mktemp("sources")
    return {
        "studio": str(synthetic_shards(root / "studio", shards=2, per_shard=30, seed=1, eval_samples=4,
                                       prefix="studio-")),
        "varied": str(synthetic_shards(root / "varied", shards=3, per_shard=25, seed=2, eval_samples=4,
                                       prefix="varied-", mean_frames=40)),
    }


def planner(folders, schedule, world=2, accumulation=1, budget=160):
    index = MixedIndex(folders, "train", schedule)
    return index, MixturePlanner(index, seed=0, frame_budget=budget, pool_size=2048, with_reference=True,
                                 max_samples=0, world_size=world, accumulation=accumulation)


def test_frame_shares_match_the_weights_over_an_epoch_on_two_ranks_with_two_workers(folders, layout):
    schedule = MixtureSchedule.constant(NAMES, {"studio": 0.25, "varied": 0.75})
    index = MixedIndex(folders, "train", schedule)
    config = StreamConfig(frame_budget=160, layouts={"streaming": 1.0})
    frames = dict.fromkeys(NAMES, 0)
    batches_per_rank = []
    for rank in range(2):
        stream = ShardStream(index, layout, config, epoch=0, rank=rank, world_size=2)
        batches = list(make_loader(stream, num_workers=2, prefetch_factor=2))
        batches_per_rank.append(len(batches))
        for batch in batches:
            source = batch.extra["source"]
            assert all(key.startswith(source + "-") for key in batch.keys)  # a batch is one source's
            frames[source] += int(batch.sub_frames.numel())  # the frames the step trains on
    assert batches_per_rank[0] == batches_per_rank[1]
    total = sum(frames.values())
    assert frames["studio"] / total == pytest.approx(0.25, abs=0.03), frames
    # every rank reads both sources (the batches of a step are shuffled among the ranks)
    sources_by_rank = [{b.source for b in index.planner(config, 2).for_rank(0, rank)} for rank in range(2)]
    assert sources_by_rank == [{0, 1}, {0, 1}]


def test_the_schedule_switches_at_the_stated_optimizer_step(folders):
    # linear between points, so a sudden switch is two points one step apart
    schedule = MixtureSchedule(NAMES, {0: {"studio": 1.0}, 5: {"studio": 1.0}, 6: {"varied": 1.0}})
    index, plan = planner(folders, schedule, world=2, accumulation=2)
    drawn = plan.plan(0)
    steps = [plan.step_of(0, g) for g in range(len(drawn))]
    assert max(steps) > 6
    for step, batch in zip(steps, drawn):
        assert index.names[batch.source] == ("studio" if step < 6 else "varied"), step
    # the epoch after continues on the schedule's last point
    assert {index.names[b.source] for b in plan.plan(1)} == {"varied"}


def test_weights_move_linearly_between_points_and_hold_outside():
    schedule = MixtureSchedule(NAMES, {100: {"studio": 1.0}, 300: {"studio": 0.2, "varied": 0.8}})
    assert schedule.weights_at(0) == [1.0, 0.0]
    assert schedule.weights_at(200) == pytest.approx([0.6, 0.4])
    assert schedule.weights_at(5000) == pytest.approx([0.2, 0.8])
    assert MixtureSchedule.constant(NAMES, {}).weights_at(7) == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown source"):
        MixtureSchedule(NAMES, {0: {"studo": 1.0}})
    with pytest.raises(ValueError, match="not all 0"):
        MixtureSchedule(NAMES, {0: {"studio": 0.0}})


def test_a_source_is_read_through_before_any_sample_repeats(folders):
    """The small source at a high weight runs through its own epochs; each of them holds every sample once."""
    schedule = MixtureSchedule.constant(NAMES, {"studio": 0.8, "varied": 0.2})
    index, plan = planner(folders, schedule)
    studio = [b for epoch in range(2) for b in plan.plan(epoch) if index.names[b.source] == "studio"]
    by_source_epoch: dict[int, list] = {}
    for batch in studio:
        by_source_epoch.setdefault(batch.source_epoch, []).extend((r.shard, r.entry) for r in batch.refs)
    assert len(by_source_epoch) >= 3
    complete = [keys for epoch, keys in sorted(by_source_epoch.items())][:-1]  # the last may be partly drawn
    for keys in complete:
        assert len(keys) == len(set(keys)) == index.parts["studio"].num_samples


def test_a_resumed_reader_rebuilds_the_same_plan_and_records_each_source_position(folders):
    schedule = MixtureSchedule(NAMES, {0: {"studio": 1.0}, 4: {"studio": 0.5, "varied": 0.5}})
    first = planner(folders, schedule)[1]
    epochs = [first.plan(e) for e in range(3)]
    fresh = planner(folders, schedule)[1]  # a new process resuming in epoch 2 replays the epochs before it
    assert fresh.plan(2) == epochs[2]
    positions = fresh.source_positions(2, 4)
    assert set(positions) == set(NAMES) and all(len(p) == 2 for p in positions.values())
    assert frame_shares(epochs[0], list(NAMES))["studio"] > 0.5  # the first steps were all studio


def test_a_changed_source_list_or_schedule_is_refused_on_resume(folders, layout):
    config = StreamConfig(frame_budget=160, accumulation=1)
    both = MixedIndex(folders, "train", MixtureSchedule.constant(NAMES, {}))
    saved = stream_position(both, config, epoch=0, batches_done=3, rank=0, world_size=2)
    assert saved.source_positions and set(saved.source_positions) == set(NAMES)
    restored = StreamPosition.from_state_dict(saved.state_dict())
    assert restored.resume_start(stream_position(both, config, 0, 0, 0, 2)) == (0, 3)
    one = MixedIndex({"studio": folders["studio"]}, "train", MixtureSchedule.constant(["studio"], {}))
    reweighted = MixedIndex(folders, "train", MixtureSchedule.constant(NAMES, {"studio": 3.0}))
    for changed in (one, reweighted):
        with pytest.raises(ValueError, match="saved under another configuration"):
            restored.resume_start(stream_position(changed, config, 0, 0, 0, 2))
        # allowed: the epoch restarts on the new plan
        assert restored.resume_start(stream_position(changed, config, 0, 0, 0, 2), allow_reshard=True) == (0, 0)


def test_an_evaluated_only_source_needs_no_train_split_and_mismatched_sources_are_named(folders, tmp_path):
    schedule = MixtureSchedule.constant([*NAMES, "english"], {"english": 0.0})
    index = MixedIndex({**folders, "english": str(tmp_path / "nowhere")}, "train", schedule)
    assert index.names == list(NAMES)
    other = synthetic_shards(tmp_path / "wide", shards=1, per_shard=8, hidden=32, prefix="wide-")
    with pytest.raises(ValueError, match="different speaker encoders.*studio: 64.*wide: 32"):
        MixedIndex({"studio": folders["studio"], "wide": str(other)}, "train",
                   MixtureSchedule.constant(["studio", "wide"], {}))
    with pytest.raises(ValueError, match="source 'varied'.*no shard index"):
        MixedIndex({"studio": folders["studio"], "varied": str(tmp_path / "missing")}, "train",
                   MixtureSchedule.constant(NAMES, {}))
