"""The streaming reader: shards -> frame-budget batches -> laid-out, collated batches, with exact resume.

Everything about an epoch is planned from the shard index alone (sample lengths live in the `.entries.json` files),
so the plan is a pure function of (index, seed, epoch, frame budget, pool size):

1. shards in an epoch-seeded order; inside each shard, samples in an epoch-and-shard-seeded order;
2. those samples cut into pools (default 2048, so a shard of up to 2048 samples is one pool); each pool sorted by
   length (with a little per-epoch jitter) and cut greedily into batches whose padded
   size (longest sample x count) stays within the frame budget: similar lengths together, little padding, while the
   pools still change from epoch to epoch;
3. all batches of the epoch shuffled (seeded), then dealt round-robin to the ranks: global batch i goes to rank
   i % world. A last round with fewer batches than ranks is merged and re-split so every rank takes the same number
   of steps and every sample is still seen exactly once;
4. on each rank, the DataLoader workers take every num_workers-th remaining batch; PyTorch's in-order round-robin
   over workers hands them back in plan order.

Several corpora in one run (`data.sources`) are planned by `mixture.py` instead of steps 1-3: whole batches of
one source each, chosen by the sources' weights; step 4 and resuming are the same.

The data position is therefore (epoch, batches consumed on this rank). Resuming builds the same plan and starts at
that batch: nothing before it is read, let alone decoded. A changed world size, shard set, seed or batching knob is
refused unless re-sharding is asked for; the semantics then are written in `StreamPosition.resume_start`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..layout import Batch, Sample, SequenceLayout
from .shard_format import FORMAT, INDEX_NAME, ShardReader

log = logging.getLogger(__name__)

# What the reader does with a sample that fails to read or lay out: log it and leave it out of its batch, or stop.
# The one list of policies: the run config (data.on_bad_sample) imports it from here.
BAD_SAMPLE_POLICIES = ("skip", "fail")


class SampleRef(NamedTuple):
    """One sample in an epoch's plan (a named tuple: plans hold one per sample of the corpus, made every epoch)."""

    shard: int  # index into the split's shard list
    entry: int  # index into that shard's entries
    cost: int  # frames the sample occupies in a batch (target frames, plus reference frames when ICL is trained)


@dataclass
class ShardInfo:
    path: Path
    entries: list[dict[str, Any]]
    bytes: Optional[int] = None  # the tar's size as index.json records it


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by a stable hash of its parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


class ShardIndex:
    """One split of a shard folder: shard paths and their entry lists, validated up front."""

    def __init__(self, dataset_dir: str | Path, split: str):
        self.dataset_dir = Path(dataset_dir)
        index_path = self.dataset_dir / INDEX_NAME
        if not index_path.exists():
            raise ValueError(f"{index_path}: no shard index here; build shards with `qwen-swe shards build`")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            raise ValueError(f"{index_path}: format {index.get('format')!r}, this reader reads {FORMAT!r}")
        splits = index.get("splits", {})
        shards = splits.get(split, [])
        if not shards or sum(int(s["samples"]) for s in shards) == 0:
            raise ValueError(
                f"{index_path}: split {split!r} has no samples (splits: "
                + ", ".join(f"{k}={sum(int(s['samples']) for s in v)}" for k, v in splits.items())
                + "); for an eval split rebuild with held-out speakers (--eval-speakers)"
            )
        self.split = split
        self.xvector_dim = index.get("xvector_dim")
        # Which tokenizer made the samples' stored prompt ids (None: shards without them; the text is tokenized).
        self.tokenizer_fingerprint: Optional[str] = (index.get("text_tokenizer") or {}).get("fingerprint")
        self.index_path = index_path
        self.shards: list[ShardInfo] = []
        for shard in shards:
            entries_path = self.dataset_dir / shard["entries"]
            if not entries_path.exists():
                raise ValueError(f"{entries_path}: entry list of shard {shard['path']} is missing; rebuild the shards")
            entries = json.loads(entries_path.read_text(encoding="utf-8"))
            self.shards.append(ShardInfo(path=self.dataset_dir / shard["path"], entries=entries,
                                         bytes=shard.get("bytes")))
        # What a resumed run must agree on: the shard set and its contents.
        self.fingerprint = hashlib.sha256(
            json.dumps([[s["path"], s["sha256"], s["samples"]] for s in shards]).encode()
        ).hexdigest()[:16]

    @property
    def num_samples(self) -> int:
        return sum(len(s.entries) for s in self.shards)

    def rank_plan(self, config: "StreamConfig", epoch: int, rank: int,
                  world_size: int) -> tuple[list[list[SampleRef]], list[Optional[str]]]:
        """Rank `rank`'s batches of `epoch`, and each batch's source name (None: a single shard folder has none)."""
        batches = plan_epoch(self, config.seed, epoch, config.frame_budget, config.pool_size, config.with_reference,
                             config.max_samples)
        mine = deal_to_rank(batches, rank, world_size)
        return mine, [None] * len(mine)

    def plan_fingerprint(self, config: "StreamConfig") -> str:
        """What the plan depends on beyond the shards and the batching knobs: nothing for one shard folder (a
        mixture's sources, weights and accumulation)."""
        return ""

    def source_positions(self, config: "StreamConfig", epoch: int, global_batch: int,
                         world_size: int) -> dict[str, list[int]]:
        return {}

    def file_problems(self) -> list[str]:
        """Shard tars that are missing or whose size is not the one index.json records (cheap: no reading), one
        line each; a run checks them before it starts rather than meeting them as unreadable samples."""
        problems = []
        for shard in self.shards:
            if not shard.path.is_file():
                problems.append(f"{shard.path}: missing")
            elif shard.bytes is not None and shard.path.stat().st_size != shard.bytes:
                problems.append(f"{shard.path}: {shard.path.stat().st_size} bytes, index.json records {shard.bytes}")
        return problems


def sample_cost(entry: dict[str, Any], with_reference: bool) -> int:
    """Frames a sample occupies in a batch: its target frames, plus its reference's when ICL is trained."""
    return int(entry["frames"]) + (int(entry.get("ref_frames") or 0) if with_reference else 0)


def over_budget(index: ShardIndex, frame_budget: int, with_reference: bool) -> list[tuple[int, str, Path]]:
    """(cost, key, shard) of every sample longer than the frame budget, longest first. Each goes in a batch of its
    own and needs more memory than the budget plans for."""
    found = [(sample_cost(entry, with_reference), entry["key"], shard.path)
             for shard in index.shards for entry in shard.entries]
    return sorted((item for item in found if item[0] > frame_budget), reverse=True)


def plan_epoch(index: ShardIndex, seed: int | tuple, epoch: int, frame_budget: int, pool_size: int = 2048,
               with_reference: bool = True, max_samples: int = 0) -> list[list[SampleRef]]:
    """All batches of one epoch, in global order, before they are dealt to ranks. `seed` may be a tuple (a mixture
    seeds each source's own epochs with the run seed and the source's name)."""
    order = list(range(len(index.shards)))
    _rng(seed, epoch, "shards").shuffle(order)
    batches: list[list[SampleRef]] = []
    for shard_id in order:
        entries = index.shards[shard_id].entries
        refs = [SampleRef(shard_id, i, sample_cost(e, with_reference)) for i, e in enumerate(entries)]
        _rng(seed, epoch, "samples", shard_id).shuffle(refs)
        for start in range(0, len(refs), pool_size):
            jitter = _rng(seed, epoch, "jitter", shard_id, start)
            batches.extend(_cut_by_budget(refs[start:start + pool_size], frame_budget, max_samples, jitter))
    _rng(seed, epoch, "batches").shuffle(batches)
    return batches


def _cut_by_budget(pool: list[SampleRef], frame_budget: int, max_samples: int, rng: random.Random,
                   jitter: float = 0.02) -> list[list[SampleRef]]:
    """Sort by length and cut so that (longest x count) stays within the budget; a too-long sample goes alone.

    The sort key carries a 2% random jitter so that which samples share a batch changes from epoch to epoch at a
    small cost in padding (measured by tools/bench_loader.py).
    """
    keyed = sorted(pool, key=lambda r: r.cost * (1.0 + jitter * rng.random()))
    batches: list[list[SampleRef]] = []
    current: list[SampleRef] = []
    longest = 0
    for ref in keyed:
        full = max_samples and len(current) >= max_samples
        if current and (full or max(longest, ref.cost) * (len(current) + 1) > frame_budget):
            batches.append(current)
            current, longest = [], 0
        current.append(ref)
        longest = max(longest, ref.cost)
    if current:
        batches.append(current)
    return batches


def deal_to_rank(batches: list[list[SampleRef]], rank: int, world: int) -> list[list[SampleRef]]:
    """Rank `rank`'s batches: every world-th one; a short last round is merged and split across all ranks."""
    full = len(batches) - len(batches) % world
    mine = batches[rank:full:world]
    leftover = [ref for batch in batches[full:] for ref in batch]
    if leftover:
        if len(leftover) < world:
            raise ValueError(
                f"the last round of the epoch has {len(leftover)} samples for {world} processes; "
                "use more data, fewer processes or a smaller frame budget"
            )
        leftover.sort(key=lambda r: r.cost)
        mine.append(leftover[rank::world])
    return mine


@dataclass
class StreamPosition:
    """Where one rank's reader stands, plus everything the plan depends on."""

    epoch: int = 0
    batches_done: int = 0  # batches of this epoch consumed by the trainer on this rank
    seed: int = 0
    world_size: int = 1
    rank: int = 0
    index_fingerprint: str = ""
    frame_budget: int = 0
    pool_size: int = 2048
    with_reference: bool = True
    max_samples: int = 0
    mixture: str = ""  # a mixture's sources, weights and accumulation (fingerprint); "" for one shard folder
    # A mixture's sources: the [own epoch, batch] each gives next, for the record (the plan is rebuilt on resume)
    source_positions: dict[str, list[int]] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "StreamPosition":
        return cls(**state)

    def differences(self, current: "StreamPosition") -> list[str]:
        names = ("seed", "world_size", "rank", "index_fingerprint", "frame_budget", "pool_size", "with_reference",
                 "max_samples", "mixture")
        return [f"{n}: saved {getattr(self, n)!r}, now {getattr(current, n)!r}" for n in names
                if getattr(self, n) != getattr(current, n)]

    def resume_start(self, current: "StreamPosition", allow_reshard: bool = False) -> tuple[int, int]:
        """(epoch, first batch) for `current`'s configuration continuing from this saved position.

        Same configuration: exactly where it stopped. With allow_reshard:
        - another world size (same shards, seed and batching): the epoch's global batch order is unchanged; the
          saved ranks had consumed batches_done x old_world of it; the new ranks start at the next multiple of the
          new world size, so at most new_world - 1 batches of this epoch are skipped and none repeats;
        - another shard set or batching knob: the plan of the epoch changes, so the current epoch restarts from its
          first batch on the new plan (samples seen earlier in this epoch may repeat); later epochs are as usual.
        """
        differences = self.differences(current)
        if not differences:
            return self.epoch, self.batches_done
        if not allow_reshard:
            raise ValueError(
                "the data position was saved under another configuration:\n  " + "\n  ".join(differences)
                + "\nresume with the same world size and shards, or allow an explicit re-shard "
                "(see StreamPosition.resume_start for what is skipped or repeated)"
            )
        plan_knobs = ("seed", "index_fingerprint", "frame_budget", "pool_size", "with_reference", "max_samples",
                      "mixture")
        if any(getattr(self, n) != getattr(current, n) for n in plan_knobs):
            return self.epoch, 0
        consumed = self.batches_done * self.world_size
        return self.epoch, -(-consumed // current.world_size)


def stream_position(index: ShardIndex, config: "StreamConfig", epoch: int, batches_done: int, rank: int,
                    world_size: int) -> StreamPosition:
    """The position a reader with this configuration would report (a single folder's plan is not built; a
    mixture's is, for its sources' positions, at a step boundary: every rank has read `batches_done` batches)."""
    return StreamPosition(
        epoch=epoch, batches_done=batches_done, seed=config.seed, world_size=world_size, rank=rank,
        index_fingerprint=index.fingerprint, frame_budget=config.frame_budget, pool_size=config.pool_size,
        with_reference=config.with_reference, max_samples=config.max_samples,
        mixture=index.plan_fingerprint(config),
        source_positions=index.source_positions(config, epoch, batches_done * world_size, world_size),
    )


@dataclass
class StreamConfig:
    frame_budget: int = 2048
    pool_size: int = 2048
    max_samples: int = 0  # 0: no cap besides the frame budget
    seed: int = 0
    layouts: dict[str, float] = field(default_factory=lambda: {"streaming": 1.0})
    language: str = "swedish"  # used when a sample names none
    on_bad_sample: str = "skip"
    # Shards whose prompt ids come from another tokenizer than the model's are refused; True tokenizes their text
    # instead (slower, same result as shards without stored ids). Runs set it with `data.retokenize=true`.
    retokenize: bool = False
    # Micro-batches per optimizer step: a mixture's schedule is by optimizer step (one folder's plan ignores it).
    accumulation: int = 1

    @property
    def with_reference(self) -> bool:
        return any(name.startswith("icl") for name, weight in self.layouts.items() if weight > 0)


class ShardStream(IterableDataset):
    """One rank's batches for one epoch from `start` on, laid out and collated (use with batch_size=None). `index`
    is one shard folder's split (`ShardIndex`) or several sources' (`mixture.MixedIndex`)."""

    def __init__(self, index: ShardIndex, layout: SequenceLayout, config: StreamConfig, epoch: int = 0,
                 start: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__()
        if config.on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {config.on_bad_sample!r}")
        check_tokenizer(index, layout, config.retokenize)
        self.index, self.layout, self.config = index, layout, config
        self.epoch, self.start, self.rank, self.world_size = epoch, start, rank, world_size
        self.plan, self.sources = index.rank_plan(config, epoch, rank, world_size)
        # Each batch's layout, drawn for the whole epoch at once: a function of (seed, epoch, rank) and the batch
        # number alone, so a resumed epoch gives its remaining batches the same layouts.
        names = sorted(config.layouts)
        self.layout_names = _rng(config.seed, epoch, rank, "layouts").choices(
            names, [config.layouts[n] for n in names], k=len(self.plan))

    def __len__(self) -> int:
        return max(0, len(self.plan) - self.start)

    def position(self, batches_done: int) -> StreamPosition:
        return stream_position(self.index, self.config, self.epoch, batches_done, self.rank, self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        worker = torch.utils.data.get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        reader = ShardReader()
        try:
            for number in range(self.start + worker_id, len(self.plan), workers):
                yield self._batch(number, reader)
        finally:
            reader.close()

    def _batch(self, number: int, reader: ShardReader) -> Batch:
        name = self.layout_names[number]
        laid, bad = [], []
        for ref in self.plan[number]:
            shard = self.index.shards[ref.shard]
            entry = shard.entries[ref.entry]
            try:
                sample = self._sample(shard, entry, reader)
                chosen = name if sample.ref_codes is not None or not name.startswith("icl") else "streaming"
                laid.append(self.layout.build(sample, chosen))
            except (ValueError, OSError) as error:
                if self.config.on_bad_sample == "fail":
                    raise ValueError(f"bad sample in {shard.path.name}: {error}") from error
                log.warning("skipping bad sample %s in %s: %s", entry.get("key"), shard.path, error)
                bad.append({"shard": str(shard.path), "key": entry.get("key"), "error": str(error)})
        info = {"epoch": self.epoch, "batch": number, "layout": name, "bad_samples": bad,
                "source": self.sources[number]}
        if not laid:
            return Batch.empty(info)
        batch = self.layout.collate(laid)
        batch.extra.update(info)
        return batch

    def _sample(self, shard: ShardInfo, entry: dict[str, Any], reader: ShardReader) -> Sample:
        return load_sample(shard, entry, reader, self.index.xvector_dim, self.config.language,
                           self.index.tokenizer_fingerprint)


def check_tokenizer(index: ShardIndex, layout: SequenceLayout, retokenize: bool = False) -> None:
    """Refuse shards whose stored prompt ids were made by another text tokenizer than the layout's (the model's).

    Old shards without stored ids pass (their text is tokenized as before); so do mismatched ones with
    `retokenize`, whose samples the layout then tokenizes from their text, because it only uses stored ids made
    under its own tokenizer's fingerprint.
    """
    if index.tokenizer_fingerprint is None:
        return
    # Computed here once (about a second) rather than by each loader worker at its first sample; the value travels
    # to the workers with the layout.
    if layout.tokenizer_fingerprint != index.tokenizer_fingerprint and not retokenize:
        raise ValueError(
            f"{index.index_path}: the shards' prompt ids were made by a text tokenizer with fingerprint "
            f"{index.tokenizer_fingerprint}, but this model's tokenizer has fingerprint {layout.tokenizer_fingerprint}; "
            "rebuild the shards with this model (`qwen-swe shards build OUT --model MODEL_DIR ...`), or set "
            "`data.retokenize=true` in the run config to tokenize every text again instead of using the stored ids "
            "(slower: the loader then tokenizes every sample)"
        )


def load_sample(shard: ShardInfo, entry: dict[str, Any], reader: ShardReader, xvector_dim: Optional[int],
                language: str, tokenizer_fingerprint: Optional[str] = None) -> Sample:
    """Read one sample's members by offset, decode and validate them, and make a layout Sample.

    `tokenizer_fingerprint` is the index's: it vouches for the stored prompt ids (the layout checks it is its own).
    """
    decoded = reader.read_sample(shard.path, entry, xvector_dim)
    return Sample(
        key=entry["key"],
        text=decoded.text,
        codes=decoded.codes,  # int16, read-only views of the bytes read (collate copies them into the batch)
        language=decoded.language or language,
        xvector=decoded.xvector,
        ref_text=decoded.ref_text,
        ref_codes=decoded.ref_codes,
        prompt_ids=decoded.prompt_ids,
        ref_prompt_ids=decoded.ref_prompt_ids,
        tokenizer_fingerprint=tokenizer_fingerprint,
        checked=True,
    )


def load_samples_by_key(index: ShardIndex, keys: Sequence[str], language: str = "swedish") -> list[Sample]:
    """Samples named by key (for replaying a batch), in the order given; unknown keys are an error."""
    where = {e["key"]: (shard, e) for shard in index.shards for e in shard.entries}
    missing = [k for k in keys if k not in where]
    if missing:
        raise ValueError(f"keys not found in split {index.split!r}: {missing[:5]}")
    with ShardReader() as reader:
        return [load_sample(*where[k], reader, index.xvector_dim, language, index.tokenizer_fingerprint)
                for k in keys]


def _ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the training process, which finishes its step and checkpoints."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(stream: ShardStream, num_workers: int = 2, prefetch_factor: int = 4) -> DataLoader:
    """A DataLoader over a ShardStream: batches are already collated; order is the plan order."""
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": False,
             "worker_init_fn": _ignore_stop_signals} if num_workers > 0 else {}
    return DataLoader(stream, batch_size=None, num_workers=num_workers, in_order=True, **extra)


def sample_keys(batches: Sequence[Batch]) -> list[str]:
    return [key for batch in batches for key in batch.keys]
