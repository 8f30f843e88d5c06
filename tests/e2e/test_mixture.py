"""Two sources under a real 2-process DDP launch with 2 loader workers per rank: over one epoch of the mixture the
frames trained on per source, summed over both ranks, match the weights, and every eval scores each source."""

from __future__ import annotations

import json
import sys

import pytest

from qwen_swe.data.mixture import MixedIndex, MixtureSchedule
from qwen_swe.data.stream import StreamConfig
from qwen_swe.data.synthetic import synthetic_shards

from ..launching import ROOT, launch

WEIGHTS = {"studio": 0.25, "varied": 0.75}


def test_frame_shares_over_an_epoch_on_two_ranks(tiny_06b, tmp_path):
    folders = {
        "studio": synthetic_shards(tmp_path / "studio", shards=2, per_shard=12, seed=1, eval_samples=3,
                                   prefix="studio-", with_reference=False),
        "varied": synthetic_shards(tmp_path / "varied", shards=2, per_shard=12, seed=2, eval_samples=3,
                                   prefix="varied-", with_reference=False, mean_frames=30),
    }
    # one epoch of the mixture, as the reader plans it for these settings
    stream = StreamConfig(frame_budget=120, pool_size=16, layouts={"streaming": 1.0})
    index = MixedIndex(folders, "train", MixtureSchedule.constant(list(WEIGHTS), WEIGHTS))
    steps = index.planner(stream, world_size=2).batches_per_rank
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "qwen_swe", "launch", "--config_file",
               str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"), "-m", "qwen_swe", "train", "--preset", "smoke",
               f"model.path={tiny_06b}", f"run.output_dir={run_dir}", f"run.max_steps={steps}",
               f"schedule.total_steps={steps}", "data.layouts={streaming: 1}", "data.num_workers=2",
               "data.frame_budget=120", f"run.eval_every={steps}", "run.eval_batches=2", f"run.checkpoint_every={steps}",
               "run.activation_stats_every=0", "run.tensorboard=false", "train.freeze=[text_embedding]",
               *(f"data.sources.{name}={folder}" for name, folder in folders.items()),
               *(f"data.weights.{name}={weight}" for name, weight in WEIGHTS.items())]
    result = launch(command)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == steps and all(r["epoch"] == 0 for r in records)
    frames = {name: sum(r[f"source/{name}/frames"] for r in records) for name in WEIGHTS}
    assert frames["studio"] / sum(frames.values()) == pytest.approx(WEIGHTS["studio"], abs=0.03), frames
    status = json.loads((run_dir / "status.json").read_text())
    assert {name: s["frames"] for name, s in status["sources"].items()} == frames
    assert set(status["last_eval"]["sources"]) == set(WEIGHTS)
