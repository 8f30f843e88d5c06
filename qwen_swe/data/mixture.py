"""Several corpora in one run: which source each batch is drawn from, by weight, on a schedule, with exact resume.

A run names its sources (`data.sources`: name -> shard folder) and how much of the training each gets: constant
weights (`data.weights`) or weights by optimizer step (`data.schedule`, piecewise-linear between its points), read
as each source's share of the frames trained on.

Why whole batches from one source rather than sources mixed inside a batch: batches are cut by frame budget from
pools of similar lengths, and corpora differ in length (parliament speeches, audiobook sentences, read prompts), so
a batch of one source pads as little as the single-source reader does; a batch's loss is then its source's loss
with no per-sample bookkeeping; and with accumulation x ranks micro-batches per optimizer step, each step still
blends the sources in proportion.

An epoch of the mixture has as many batches as one pass over every source that is drawn at all (rounded down to a
multiple of the world size). Its plan is a pure function of the sources' indexes, the seed, the batching knobs,
the world size and the accumulation, built in three steps:

1. every source is an endless run of its own epochs, each planned by the single-source planner
   (`stream.plan_epoch`, seeded by the source's name); a source continues where it stopped in the previous epoch
   of the mixture, so a large source is read through before any of its samples repeats;
2. global batch g of epoch e belongs to optimizer step (e x batches_per_rank + g // world) // accumulation, whose
   weights the schedule gives; each batch comes from the source furthest behind its weighted share of the frames
   drawn so far (a deficit counter, as smooth weighted round-robin does), so the shares match the weights within
   about one batch per source over any stretch of steps, with no randomness to average out;
3. the batches of one optimizer step are shuffled among themselves (seeded), so no rank or loader worker always
   gets the same source, then dealt round-robin to the ranks as the single-source reader does.

Resuming is therefore the single-source rule: the plan is rebuilt and each rank starts at its batch. A position
records which source batch each source would give next (`source_positions`), and a fingerprint of the sources and
the schedule that a resume compares (a changed source list or weights is refused unless allowed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Optional, Sequence

from .stream import SampleRef, ShardIndex, ShardInfo, _rng, plan_epoch

if TYPE_CHECKING:
    from .stream import StreamConfig


# ------------------------------------------------------------------------------------------ weights by step
class MixtureSchedule:
    """Each source's share of the frames as a function of the optimizer step.

    `points` maps a step to weights by source name (a source a point leaves out weighs 0 there); between two points
    each weight moves linearly, before the first and after the last it stays put. Weights are normalised per step,
    so they need not sum to 1.
    """

    def __init__(self, names: Sequence[str], points: Mapping[int, Mapping[str, float]]):
        if not points:
            raise ValueError("a mixture schedule needs at least one point")
        self.names = list(names)
        unknown = sorted({name for weights in points.values() for name in weights} - set(self.names))
        if unknown:
            raise ValueError(f"weights name unknown source(s) {', '.join(unknown)}; sources are "
                             f"{', '.join(self.names)}")
        by_step = {int(step): weights for step, weights in points.items()}
        self.steps = sorted(by_step)
        self.points = [[float(by_step[step].get(name, 0.0)) for name in self.names] for step in self.steps]
        for step, weights in zip(self.steps, self.points):
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"the weights at step {step} must be >= 0 and not all 0, got "
                                 f"{dict(zip(self.names, weights))}")

    @classmethod
    def constant(cls, names: Sequence[str], weights: Mapping[str, float]) -> "MixtureSchedule":
        """Fixed weights; a source `weights` leaves out weighs 1 (no weights at all: equal shares)."""
        return cls(names, {0: {name: float(weights.get(name, 1.0)) for name in names}})

    def weights_at(self, step: int) -> list[float]:
        """Normalised weights, in `names` order, for the batches of optimizer step `step` (0-based)."""
        if step <= self.steps[0]:
            raw = self.points[0]
        elif step >= self.steps[-1]:
            raw = self.points[-1]
        else:
            after = next(i for i, s in enumerate(self.steps) if s > step)
            s0, s1 = self.steps[after - 1], self.steps[after]
            t = (step - s0) / (s1 - s0)
            raw = [a + t * (b - a) for a, b in zip(self.points[after - 1], self.points[after])]
        total = sum(raw)
        return [w / total for w in raw]

    def drawn(self) -> list[str]:
        """Sources with a weight above 0 somewhere: the ones training reads (the rest are evaluated only)."""
        return [name for i, name in enumerate(self.names) if any(weights[i] > 0 for weights in self.points)]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([self.names, self.steps, self.points]).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ the sources' shards
class MixedIndex:
    """The train splits of several shard folders read as one index: the shards of every drawn source one after
    another (`shards`; `offsets` says where each source's begin). It offers what the reader uses of a `ShardIndex`."""

    def __init__(self, folders: Mapping[str, str | Path], split: str, schedule: MixtureSchedule):
        self.split = split
        self.schedule = schedule
        self.names = schedule.drawn()
        self.parts: dict[str, ShardIndex] = {}
        for name in self.names:
            try:
                self.parts[name] = ShardIndex(folders[name], split)
            except ValueError as error:
                raise ValueError(f"source {name!r}: {error}") from error
        self.shards: list[ShardInfo] = []
        self.offsets: dict[str, int] = {}  # where each source's shards start in `shards`
        for name, part in self.parts.items():
            self.offsets[name] = len(self.shards)
            self.shards += part.shards
        self.xvector_dim = self._common("xvector_dim", "were built with different speaker encoders (x-vector sizes)")
        self.tokenizer_fingerprint: Optional[str] = self._common(
            "tokenizer_fingerprint", "hold prompt ids made by different text tokenizers; rebuild them with one model")
        first = next(iter(self.parts.values()))
        self.index_path = first.index_path  # messages name the first source's index; source errors name theirs
        self.dataset_dir = first.dataset_dir
        self.fingerprint = hashlib.sha256(json.dumps(
            [[name, part.fingerprint] for name, part in self.parts.items()]).encode()).hexdigest()[:16]
        self._planners: dict[tuple, MixturePlanner] = {}

    def _common(self, attribute: str, problem: str) -> Any:
        values = {name: getattr(part, attribute) for name, part in self.parts.items()}
        if len(set(values.values())) > 1:
            raise ValueError(f"the sources' shards {problem}: " + ", ".join(f"{n}: {v}" for n, v in values.items()))
        return next(iter(values.values()))

    @property
    def num_samples(self) -> int:
        return sum(part.num_samples for part in self.parts.values())

    def file_problems(self) -> list[str]:
        return [problem for part in self.parts.values() for problem in part.file_problems()]

    # What the reader asks of an index (the same methods as ShardIndex's)
    def planner(self, config: "StreamConfig", world_size: int) -> "MixturePlanner":
        """The planner for these batching knobs and world size, kept so that its replayed epochs are reused."""
        key = (config.seed, config.frame_budget, config.pool_size, config.with_reference, config.max_samples,
               world_size, config.accumulation)
        if key not in self._planners:
            self._planners[key] = MixturePlanner(self, config.seed, config.frame_budget, config.pool_size,
                                                 config.with_reference, config.max_samples, world_size,
                                                 config.accumulation)
        return self._planners[key]

    def rank_plan(self, config: "StreamConfig", epoch: int, rank: int,
                  world_size: int) -> tuple[list[list[SampleRef]], list[Optional[str]]]:
        mine = self.planner(config, world_size).for_rank(epoch, rank)
        return [batch.refs for batch in mine], [self.names[batch.source] for batch in mine]

    def plan_fingerprint(self, config: "StreamConfig") -> str:
        return f"{self.schedule.fingerprint()}-a{config.accumulation}"

    def source_positions(self, config: "StreamConfig", epoch: int, global_batch: int,
                         world_size: int) -> dict[str, list[int]]:
        return self.planner(config, world_size).source_positions(epoch, global_batch)


def open_training_index(shards: str, sources: Mapping[str, str], schedule: Optional[MixtureSchedule],
                        split: str) -> ShardIndex | MixedIndex:
    """The training split a run reads: one shard folder, or its sources mixed."""
    if sources:
        assert schedule is not None, "a mixture needs its schedule"
        return MixedIndex(sources, split, schedule)
    return ShardIndex(shards, split)


# ------------------------------------------------------------------------------------------ the mixed plan
class DrawnBatch(NamedTuple):
    """One batch of a mixed epoch: its source (number in MixedIndex.names), which of that source's own epochs and
    which batch of it, and its samples (shard numbers refer to MixedIndex.shards)."""

    source: int
    source_epoch: int
    number: int
    refs: list[SampleRef]


@dataclass
class Cursor:
    """Where a source's own run of epochs stands: the next batch is batch `number` of its epoch `epoch`."""

    epoch: int = 0
    number: int = 0


class MixturePlanner:
    """Plans epochs of a mixture (see the module docstring). One per reader; it remembers where each source stood at
    the start of the epochs it planned, so planning epoch e replays the epochs before it only once per process, and
    keeps the epoch it drew last (each rank's reader and each checkpoint's source positions ask for it again)."""

    def __init__(self, index: MixedIndex, seed: int, frame_budget: int, pool_size: int, with_reference: bool,
                 max_samples: int, world_size: int, accumulation: int):
        self.index, self.seed, self.world_size, self.accumulation = index, seed, world_size, max(1, accumulation)
        self.batching = (frame_budget, pool_size, with_reference, max_samples)
        self._source_epochs: dict[tuple[int, int], list[list[SampleRef]]] = {}
        drawn_once = sum(len(self._source_epoch(s, 0)) for s in range(len(index.names)))
        self.epoch_batches = drawn_once - drawn_once % world_size
        if self.epoch_batches == 0:
            raise ValueError(f"the sources hold {drawn_once} batch(es) in all, fewer than the {world_size} "
                             "processes; use more data, fewer processes or a smaller frame budget")
        self.batches_per_rank = self.epoch_batches // world_size
        self._starts: dict[int, list[Cursor]] = {0: [Cursor() for _ in index.names]}
        self._last: tuple[int, list[DrawnBatch]] = (-1, [])  # (epoch, its plan)

    def _source_epoch(self, source: int, epoch: int) -> list[list[SampleRef]]:
        key = (source, epoch)
        if key not in self._source_epochs:
            name = self.index.names[source]
            offset = self.index.offsets[name]
            planned = plan_epoch(self.index.parts[name], (self.seed, "source", name), epoch, *self.batching)
            if len(self._source_epochs) > 4 * len(self.index.names):  # keep memory flat over long runs
                self._source_epochs.clear()
            self._source_epochs[key] = [[SampleRef(r.shard + offset, r.entry, r.cost) for r in batch]
                                        for batch in planned]
        return self._source_epochs[key]

    def step_of(self, epoch: int, global_batch: int) -> int:
        """The optimizer step (0-based) whose micro-batches include global batch `global_batch` of `epoch`."""
        return (epoch * self.batches_per_rank + global_batch // self.world_size) // self.accumulation

    def plan(self, epoch: int) -> list[DrawnBatch]:
        """Every batch of mixed epoch `epoch`, in global order (global batch g goes to rank g % world)."""
        if self._last[0] != epoch:
            known = max(e for e in self._starts if e <= epoch)
            for earlier in range(known, epoch):
                self._draw(earlier)
            self._last = (epoch, self._draw(epoch))
        return self._last[1]

    def _draw(self, epoch: int) -> list[DrawnBatch]:
        cursors = [Cursor(c.epoch, c.number) for c in self._starts[epoch]]
        names = self.index.names
        deficit = [0.0] * len(names)  # each source's weighted share of the frames drawn so far, minus its frames
        drawn: list[DrawnBatch] = []
        for g in range(self.epoch_batches):
            weights = self._weights(self.step_of(epoch, g))
            candidates = [s for s in range(len(names)) if weights[s] > 0]
            source = max(candidates, key=lambda s: (deficit[s], -s))
            cursor = cursors[source]
            batches = self._source_epoch(source, cursor.epoch)
            while cursor.number >= len(batches):  # this source's epoch is used up: its next one
                cursor.epoch, cursor.number = cursor.epoch + 1, 0
                batches = self._source_epoch(source, cursor.epoch)
            refs = batches[cursor.number]
            drawn.append(DrawnBatch(source, cursor.epoch, cursor.number, refs))
            cursor.number += 1
            frames = sum(ref.cost for ref in refs)
            for s in range(len(names)):
                deficit[s] += weights[s] * frames
            deficit[source] -= frames
        self._starts[epoch + 1] = cursors
        return self._shuffle_within_steps(epoch, drawn)

    def _weights(self, step: int) -> list[float]:
        all_weights = dict(zip(self.index.schedule.names, self.index.schedule.weights_at(step)))
        return [all_weights[name] for name in self.index.names]

    def _shuffle_within_steps(self, epoch: int, drawn: list[DrawnBatch]) -> list[DrawnBatch]:
        shuffled: list[DrawnBatch] = []
        group: list[DrawnBatch] = []
        for g, batch in enumerate(drawn):
            group.append(batch)
            last = g == len(drawn) - 1 or self.step_of(epoch, g + 1) != self.step_of(epoch, g)
            if last:
                _rng(self.seed, epoch, "mixture", self.step_of(epoch, g)).shuffle(group)
                shuffled += group
                group = []
        return shuffled

    def for_rank(self, epoch: int, rank: int) -> list[DrawnBatch]:
        return self.plan(epoch)[rank::self.world_size]

    def source_positions(self, epoch: int, global_batch: int) -> dict[str, list[int]]:
        """Per source, [its epoch, its batch] that it gives next once the epoch's first `global_batch` batches were
        drawn (for the record in a saved position)."""
        plan = self.plan(epoch)
        cursors = {name: [c.epoch, c.number] for name, c in zip(self.index.names, self._starts[epoch])}
        for batch in plan[:global_batch]:
            name = self.index.names[batch.source]
            cursors[name] = max(cursors[name], [batch.source_epoch, batch.number + 1])
        return cursors

