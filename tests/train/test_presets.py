"""The GPU presets' training knobs, run for real in one process on the tiny model: the `pilot` preset's bf16
autocast, recomputed activations, 8-bit AdamW and accumulation over 4 micro-batches must update the weights at every
optimizer step (accelerate's accumulation counter decides when a step really happens), and `full`'s plain AdamW too."""

from __future__ import annotations

import json

import pytest

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.config import PRESETS, load_config
from qwen_swe.train.hooks import TrainerHook

from .conftest import fresh_accelerate_state_reset


class WatchWeights(TrainerHook):
    """After each step: how far one trained matrix moved, and the learning rate in force."""

    def __init__(self):
        self.moved: list[float] = []
        self.before = None

    def weight(self, trainer):
        model = trainer.accelerator.unwrap_model(trainer.objective)
        return model.model.talker.model.layers[0].self_attn.q_proj.weight.detach().float().clone()

    def on_train_start(self, trainer):
        self.before = self.weight(trainer)

    def on_step_end(self, trainer, record):
        after = self.weight(trainer)
        self.moved.append(float((after - self.before).abs().max()))
        self.before = after


@pytest.mark.parametrize("preset", ["pilot", "full"])
def test_gpu_presets_update_the_weights_at_every_optimizer_step(preset, tiny_06b, tmp_path):
    from qwen_swe.train.trainer import Trainer

    fresh_accelerate_state_reset()
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=24, with_reference=False)
    # the preset as it is, with only sizes and cadences shrunk to the tiny model and CPU
    config = load_config(None, preset, [f"model.path={tiny_06b}", f"data.shards={shards}",
                                        f"run.output_dir={tmp_path / 'run'}", "data.frame_budget=120",
                                        "data.num_workers=0", "schedule.warmup_steps=0", "schedule.total_steps=3",
                                        "optim.lr=1e-3", "run.eval_every=0", "run.tensorboard=false"])
    recommended = PRESETS[preset]
    assert config.optim.accumulation == recommended["optim"]["accumulation"]
    assert (config.optim.name, config.train.precision) == (recommended["optim"]["name"], "bf16-mixed")
    assert config.train.gradient_checkpointing and config.train.freeze == recommended["train"]["freeze"]
    watch = WatchWeights()
    trainer = Trainer(config, hooks=[watch])
    assert trainer.run() == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["finite"] and not r["data_skipped"] for r in records)
    # every optimizer step moved the weights: none was silently skipped between accumulation boundaries
    assert len(watch.moved) == 3 and all(moved > 0 for moved in watch.moved), watch.moved
    # one scheduler step per optimizer step (no warmup here, so the first step already has a learning rate): the
    # cosine decays from the peak, and the rate logged after step 1 is the one step 2 ran with
    lrs = [r["lr/default/decay"] for r in records]
    assert 1e-3 > lrs[0] > lrs[1] > lrs[2] == pytest.approx(0.0)
