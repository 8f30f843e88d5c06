"""Held-out teacher-forced loss and accuracies: the trainer's reader, layout and objective, on the eval split.

The same `ShardStream` plans the batches, the same `SequenceLayout` lays them out and the same `TalkerObjective`
scores them, so a number here means what the trainer's eval loss means. Each layout is scored on its own (a model can
be good at streaming and bad at ICL); metrics are frame-weighted means over batches, except EOS accuracy, which is
weighted by the number of EOS positions (one per sample).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

FRAME_WEIGHTED = ("loss", "codebook0_loss", "sub_talker_loss", "codebook0_accuracy", "sub_talker_accuracy")


def heldout_metrics(wrapper: Any, shards: str | Path, split: str = "eval", layouts: Sequence[str] = ("streaming",),
                    frame_budget: int = 2048, max_batches: int = 0, sub_talker_weight: float = 0.3,
                    language: str = "swedish", seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """{"layouts": {name: metrics}, plus the frame-weighted metrics over all layouts at the top level}.

    `wrapper` is a loaded `Qwen3TTSModel`; `max_batches` 0 scores the whole split.
    """
    import torch

    from ..data.stream import ShardIndex, ShardStream, StreamConfig, make_loader
    from ..layout import SequenceLayout
    from ..objective import TalkerObjective

    index = ShardIndex(shards, split)
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    objective = TalkerObjective(wrapper.model, sub_talker_weight=sub_talker_weight).eval()
    device = next(wrapper.model.parameters()).device
    per_layout: dict[str, dict[str, float]] = {}
    for name in layouts:
        config = StreamConfig(frame_budget=frame_budget, seed=seed, layouts={name: 1.0}, language=language,
                              on_bad_sample="fail")
        stream = ShardStream(index, layout, config, epoch=0, start=0)
        sums = dict.fromkeys(FRAME_WEIGHTED, 0.0)
        frames = eos_weight = eos_correct = samples = 0.0
        total = len(stream) if max_batches <= 0 else min(len(stream), max_batches)
        with torch.inference_mode():
            for number, batch in enumerate(tqdm(make_loader(stream, num_workers=0), total=total, unit="batch",
                                                desc=f"held-out loss ({name})", disable=not progress)):
                if max_batches > 0 and number >= max_batches:
                    break
                out = objective(batch.to(device))
                weight = float(out["frames"])
                for key in FRAME_WEIGHTED:
                    sums[key] += float(out[key]) * weight
                frames += weight
                count = len(batch.keys)
                samples += count
                eos_correct += float(out["eos_accuracy"]) * count
                eos_weight += count
        if frames == 0:
            raise ValueError(f"{shards}: split {split!r} gave no frames to score")
        per_layout[name] = {**{k: v / frames for k, v in sums.items()}, "eos_accuracy": eos_correct / eos_weight,
                            "frames": frames, "samples": samples}
    total_frames = sum(m["frames"] for m in per_layout.values())
    overall = {k: sum(m[k] * m["frames"] for m in per_layout.values()) / total_frames for k in FRAME_WEIGHTED}
    overall["eos_accuracy"] = (sum(m["eos_accuracy"] * m["samples"] for m in per_layout.values())
                               / sum(m["samples"] for m in per_layout.values()))
    return {**overall, "frames": total_frames, "split": split, "shards": str(shards), "layouts": per_layout}
