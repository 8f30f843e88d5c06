"""Held-out eval during training: every `run.eval_every` optimizer steps, `run.eval_batches` batches of the eval split
scored by the training objective on every rank, summed across ranks (`objective.ScoreTally`: means per frame, EOS
accuracy per sample), the same numbers `qwen-swe eval` reports for a held-out split.

A run on several sources (`data.sources`) scores each source's eval split on its own (`run.eval_batches` batches
each) and reports them under `sources`, so an English replay set shows forgetting as it happens; the top-level
numbers are all of them scored together. A source without an eval split is named once and left out.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..data.stream import ShardIndex, ShardStream, StreamConfig, make_loader
from ..layout import SequenceLayout
from ..objective import ScoreTally
from .config import RunConfig


class HeldOutEvaluator:
    def __init__(self, accelerator: Any, config: RunConfig, layout: SequenceLayout, stream_config: StreamConfig,
                 everyone: Callable[[bool], bool], say: Callable[[str], None] = print):
        self.accelerator, self.layout, self.stream_config = accelerator, layout, stream_config
        self.every, self.batches = config.run.eval_every, config.run.eval_batches
        self.everyone = everyone  # True when a flag holds on every rank
        self.by_source = bool(config.data.sources)
        self.indexes: dict[str, ShardIndex] = {}  # by source name ("" for a single data.shards)
        if not self.every:
            return
        if not self.by_source:
            self.indexes[""] = ShardIndex(config.data.shards, config.data.eval_split)
            return
        missing = []
        for name, folder in config.data.sources.items():
            try:
                self.indexes[name] = ShardIndex(folder, config.data.eval_split)
            except ValueError as error:
                missing.append(f"{name} ({error})")
        if not self.indexes:
            raise ValueError(f"no source has an eval split {config.data.eval_split!r} to score every "
                             f"run.eval_every={self.every} steps: {'; '.join(missing)}; rebuild one with held-out "
                             "speakers (--eval-speakers), or set run.eval_every=0")
        if missing:
            say(f"note: held-out eval leaves out source(s) without an eval split: {'; '.join(missing)}")

    @property
    def enabled(self) -> bool:
        return bool(self.indexes)

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    @torch.no_grad()
    def evaluate(self, objective: torch.nn.Module, step: int) -> dict[str, Any]:
        """{"step", the means over every eval split, and with sources "sources": {name: that source's means}}."""
        objective.eval()
        scored = {name: self._score(objective, index) for name, index in self.indexes.items()}
        objective.train()
        total = sum(scored.values(), ScoreTally(device=self.accelerator.device))
        results: dict[str, Any] = {"step": step, **total.means()}
        if self.by_source:
            results["sources"] = {name: tally.means() for name, tally in scored.items()}
        return results

    def _score(self, objective: torch.nn.Module, index: ShardIndex) -> ScoreTally:
        accelerator = self.accelerator
        stream = ShardStream(index, self.layout, self.stream_config, epoch=0, start=0,
                             rank=accelerator.process_index, world_size=accelerator.num_processes)
        tally = ScoreTally(device=accelerator.device)
        for number, batch in enumerate(make_loader(stream, num_workers=0)):
            if number >= self.batches:
                break
            if not self.everyone(not batch.is_empty):  # a rank's whole batch was unusable: everyone skips it
                continue
            tally.add(objective(batch.to(accelerator.device)), len(batch.keys))
        return ScoreTally(accelerator.reduce(tally.sums, reduction="sum"))


def flat_eval_scalars(results: dict[str, Any]) -> dict[str, float]:
    """An eval's numbers as TensorBoard scalars: eval/<metric> and eval/<source>/<metric>."""
    scalars = {f"eval/{k}": v for k, v in results.items() if isinstance(v, (int, float)) and k != "step"}
    for name, means in (results.get("sources") or {}).items():
        scalars.update({f"eval/{name}/{k}": v for k, v in means.items()})
    return scalars
