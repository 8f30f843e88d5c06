"""Held-out teacher-forced loss and accuracies: the trainer's reader, layout and objective, on the eval split.

The same `ShardStream` plans the batches, the same `SequenceLayout` lays them out and the same `TalkerObjective`
scores them, so a number here means what the trainer's eval loss means. Each layout is scored on its own (a model can
be good at streaming and bad at ICL), then all together; `objective.ScoreTally` weights the means (per frame; EOS
accuracy per sample), as it does for the trainer's eval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

def heldout_metrics(wrapper: Any, shards: str | Path, split: str = "eval", layouts: Sequence[str] = ("streaming",),
                    frame_budget: int = 2048, max_batches: int = 0, sub_talker_weight: float = 0.3,
                    language: str = "swedish", seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """{"layouts": {name: metrics}, plus the frame-weighted metrics over all layouts at the top level}.

    `wrapper` is a loaded `Qwen3TTSModel`; `max_batches` 0 scores the whole split.
    """
    import torch

    from ..data.stream import ShardIndex, ShardStream, StreamConfig, make_loader
    from ..layout import SequenceLayout
    from ..objective import ScoreTally, TalkerObjective

    index = ShardIndex(shards, split)
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    objective = TalkerObjective(wrapper.model, sub_talker_weight=sub_talker_weight).eval()
    device = next(wrapper.model.parameters()).device
    per_layout: dict[str, dict[str, float]] = {}
    overall = ScoreTally()
    for name in layouts:
        config = StreamConfig(frame_budget=frame_budget, seed=seed, layouts={name: 1.0}, language=language,
                              on_bad_sample="fail")
        stream = ShardStream(index, layout, config, epoch=0, start=0)
        tally = ScoreTally()
        total = len(stream) if max_batches <= 0 else min(len(stream), max_batches)
        with torch.inference_mode():
            for number, batch in enumerate(tqdm(make_loader(stream, num_workers=0), total=total, unit="batch",
                                                desc=f"held-out loss ({name})", disable=not progress)):
                if max_batches > 0 and number >= max_batches:
                    break
                tally.add(objective(batch.to(device)), len(batch.keys))
        if tally.frames == 0:
            raise ValueError(f"{shards}: split {split!r} gave no frames to score")
        per_layout[name] = tally.means()
        overall = overall + tally
    return {**overall.means(), "split": split, "shards": str(shards), "layouts": per_layout}
