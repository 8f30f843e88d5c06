"""Held-out eval during training: every `run.eval_every` optimizer steps, `run.eval_batches` batches of the eval split
scored by the training objective on every rank, summed across ranks (`objective.ScoreTally`: means per frame, EOS
accuracy per sample), the same numbers `qwen-swe eval` reports for a held-out split."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..data.stream import ShardIndex, ShardStream, StreamConfig, make_loader
from ..layout import SequenceLayout
from ..objective import ScoreTally
from .config import RunConfig


class HeldOutEvaluator:
    def __init__(self, accelerator: Any, config: RunConfig, layout: SequenceLayout, stream_config: StreamConfig,
                 everyone: Callable[[bool], bool]):
        self.accelerator, self.layout, self.stream_config = accelerator, layout, stream_config
        self.every, self.batches = config.run.eval_every, config.run.eval_batches
        self.everyone = everyone  # True when a flag holds on every rank
        self.index: Optional[ShardIndex] = None
        if self.every:
            self.index = ShardIndex(config.data.shards, config.data.eval_split)

    @property
    def enabled(self) -> bool:
        return self.index is not None

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    @torch.no_grad()
    def evaluate(self, objective: torch.nn.Module, step: int) -> dict[str, Any]:
        accelerator = self.accelerator
        stream = ShardStream(self.index, self.layout, self.stream_config, epoch=0, start=0,
                             rank=accelerator.process_index, world_size=accelerator.num_processes)
        objective.eval()
        tally = ScoreTally(device=accelerator.device)
        for number, batch in enumerate(make_loader(stream, num_workers=0)):
            if number >= self.batches:
                break
            if not self.everyone(not batch.is_empty):  # a rank's whole batch was unusable: everyone skips it
                continue
            tally.add(objective(batch.to(accelerator.device)), len(batch.keys))
        objective.train()
        total = ScoreTally(accelerator.reduce(tally.sums, reduction="sum"))
        return {"step": step, **total.means()}
