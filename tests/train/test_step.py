"""The training step in one process: accumulation passes over a micro-batch with no usable sample and still updates
the weights at every step; the sub-talker's frame draw is part of the run's state, so a resumed run continues
exactly; eval scores every frame whatever the training share."""

from __future__ import annotations

import json
import os
import sys

import pytest

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.config import load_config
from qwen_swe.train.provenance import ResumeRefused

from ..helpers import empty_micro_batch_in_the_middle_for
from ..launching import losses
from .conftest import fresh_accelerate_state_reset
from .test_presets import WatchWeights


def train(model, shards, run_dir, *extra, hooks=(), resume=None):
    from qwen_swe.train.trainer import Trainer

    fresh_accelerate_state_reset()
    config = load_config(None, "smoke", [
        f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}", "data.max_samples=1",
        "data.layouts={streaming: 1}", "optim.accumulation=2", "objective.sub_talker_frames=0.25",
        "schedule.total_steps=4", "schedule.warmup_steps=0", "run.checkpoint_every=2", "run.eval_every=2", "run.eval_batches=100",
        "run.tensorboard=false", "train.freeze=[text_embedding]", *extra])
    try:
        return Trainer(config, resume=resume, hooks=hooks).run()
    finally:
        fresh_accelerate_state_reset()


def test_accumulation_with_an_empty_micro_batch_and_sampled_frames_updates_every_step_and_resumes_exactly(
        tiny_06b, tmp_path):
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=10, eval_samples=3, with_reference=False)
    empty_micro_batch_in_the_middle_for(shards, rank=0, world=1)
    watch = WatchWeights()
    assert train(tiny_06b, shards, tmp_path / "whole", "run.max_steps=4", hooks=[watch]) == 0
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in records] == [2, 1, 2, 2] and records[1]["bad_samples"] == 1
    assert all(r["finite"] for r in records)
    assert len(watch.moved) == 4 and all(moved > 0 for moved in watch.moved), watch.moved  # no step lost
    manifest = json.loads((tmp_path / "whole" / "run_manifest.json").read_text())
    assert manifest["math"]["objective.sub_talker_frames"] == 0.25

    assert train(tiny_06b, shards, tmp_path / "split", "run.max_steps=2") == 0
    assert train(tiny_06b, shards, tmp_path / "split", "run.max_steps=4", resume="auto") == 0
    ours, theirs = losses(tmp_path / "split"), losses(tmp_path / "whole")
    assert sorted(ours) == [1, 2, 3, 4] and all(ours[step] == theirs[step] for step in ours), (ours, theirs)
    # held-out eval scores every frame of the eval split, whatever share training draws
    report = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert report["last_eval"]["frames"] == sum(
        entry["frames"] for entry in json.loads((shards / "eval" / "eval-000000.entries.json").read_text()))


def test_the_share_the_readme_suggests_for_the_0_6b_trains_and_resumes_exactly(tiny_06b, tmp_path):
    """objective.sub_talker_frames=0.0625 (1/16, CSM's choice): every step updates, a resumed run draws the same
    frames (at least one frame per micro-batch even where 1/16 of it rounds to none)."""
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=8, eval_samples=0, with_reference=False)
    sixteenth = ["objective.sub_talker_frames=0.0625", "run.eval_every=0"]
    watch = WatchWeights()
    assert train(tiny_06b, shards, tmp_path / "whole", "run.max_steps=4", *sixteenth, hooks=[watch]) == 0
    assert all(moved > 0 for moved in watch.moved) and len(watch.moved) == 4
    assert train(tiny_06b, shards, tmp_path / "split", "run.max_steps=2", *sixteenth) == 0
    assert train(tiny_06b, shards, tmp_path / "split", "run.max_steps=4", *sixteenth, resume="auto") == 0
    ours, theirs = losses(tmp_path / "split"), losses(tmp_path / "whole")
    assert sorted(ours) == [1, 2, 3, 4] and all(ours[step] == theirs[step] for step in ours), (ours, theirs)


def test_a_changed_frame_share_is_refused_on_resume(tiny_06b, tmp_path):
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=6, eval_samples=0, with_reference=False)
    assert train(tiny_06b, shards, tmp_path / "run", "run.max_steps=2", "run.eval_every=0") == 0
    with pytest.raises(ResumeRefused, match=r"objective.sub_talker_frames: 0.25 -> 0.5"):
        train(tiny_06b, shards, tmp_path / "run", "run.max_steps=4", "run.eval_every=0",
              "objective.sub_talker_frames=0.5", resume="auto")


class CountingHostReads:
    """Counts reads of tensor values back to the host (each one a stall on a GPU) that qwen_swe's own code makes
    while active (transformers' attention-mask helper makes one per forward on its own)."""

    NAMES = ("item", "tolist", "__float__", "__bool__", "__int__")

    def __init__(self, monkeypatch):
        import torch

        self.count = 0
        self.active = False
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if self.active and f"{os.sep}qwen_swe{os.sep}" in sys._getframe(1).f_code.co_filename:
                    self.count += 1
                return _original(tensor, *args, **kwargs)
            monkeypatch.setattr(torch.Tensor, name, counted)


def test_the_objective_reads_nothing_back_to_the_host(tiny_06b, tmp_path, monkeypatch):
    """Finiteness flags and metric sums stay on the device until the step's two reductions; the forward itself
    never branches on a device value (on a GPU every such read stalls the stream, once per micro-batch)."""
    from qwen_swe.objective import TalkerObjective

    counter = CountingHostReads(monkeypatch)
    forward, during_forward = TalkerObjective.forward, []

    def counted_forward(self, *args, **kwargs):
        counter.count, counter.active = 0, True
        try:
            return forward(self, *args, **kwargs)
        finally:
            counter.active = False
            during_forward.append(counter.count)
    monkeypatch.setattr(TalkerObjective, "forward", counted_forward)
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=16, eval_samples=0)
    assert train(tiny_06b, shards, tmp_path / "run", "run.max_steps=2", "run.eval_every=0",
                 "run.activation_stats_every=0",  # the per-layer statistics read maxima back, when armed
                 "data.layouts={icl: 1, streaming: 1}", "optim.accumulation=4") == 0
    assert len(during_forward) == 8 and set(during_forward) == {0}, during_forward
