"""Bad data is a data problem, never a numerics one: missing shards refused up front, skipped samples counted and
listed, a step with nothing usable is a data skip, and a budget (`data.max_bad_samples`) stops the run (exit 4)."""

from __future__ import annotations

import json

import pytest

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.config import load_config

from .conftest import fresh_accelerate_state_reset


def corrupt(shards, keys) -> None:
    """Make the codes of `keys` invalid in place (a code of 32767, beyond the codebook), keeping every size."""
    tar = shards / "train" / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    for entry in json.loads((shards / "train" / "train-000000.entries.json").read_text()):
        if entry["key"] in keys:
            offset, size = entry["members"]["codes.npy"]
            data[offset + size - 2:offset + size] = b"\xff\x7f"
    tar.write_bytes(bytes(data))


def run(model, shards, run_dir, *extra):
    from qwen_swe.train.trainer import Trainer

    fresh_accelerate_state_reset()
    # one sample per batch, 8 samples: 8 steps read every sample once; patience 1 would stop on one numerics event
    config = load_config(None, "smoke", [
        f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}", "data.max_samples=1",
        "run.max_steps=8", "run.eval_every=0", "run.checkpoint_every=8", "run.non_finite_patience=1",
        "run.tensorboard=false", "train.freeze=[text_embedding]", *extra])
    return Trainer(config).run()


@pytest.fixture
def bad_shards(tmp_path):
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=8, with_reference=False)
    corrupt(shards, {"train000x0001", "train000x0004", "train000x0006"})
    return shards


def test_bad_samples_are_counted_listed_and_never_numerics(tiny_06b, bad_shards, tmp_path, fresh_accelerate_state):
    run_dir = tmp_path / "run"
    assert run(tiny_06b, bad_shards, run_dir, "data.max_bad_samples=0") == 0
    status = json.loads((run_dir / "status.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    assert status["health"] == "finished" and status["bad_samples"] == 3 and status["non_finite_total"] == 0
    assert (report["bad_samples"], report["samples_read"], report["data_skipped_steps"]) == (3, 8, 3)
    listed = [json.loads(line) for line in (run_dir / "bad_samples" / "rank0.jsonl").read_text().splitlines()]
    assert sorted(bad["key"] for bad in listed) == ["train000x0001", "train000x0004", "train000x0006"]
    assert all(bad["shard"].endswith("train-000000.tar") and "codes" in bad["error"] for bad in listed)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in records if r["data_skipped"]]
    assert len(skipped) == 3 and all(r["bad_samples"] == 1 and r["samples"] == 0 for r in skipped)


def test_a_bad_sample_budget_stops_the_run_naming_the_shard(tiny_06b, bad_shards, tmp_path, fresh_accelerate_state):
    run_dir = tmp_path / "run"
    assert run(tiny_06b, bad_shards, run_dir, "data.max_bad_samples=2") == 4
    status = json.loads((run_dir / "status.json").read_text())
    assert status["health"] == "stopped: bad data" and status["bad_samples"] == 3
    assert "more than data.max_bad_samples=2 allows (latest in train-000000.tar" in status["message"]
    assert "qwen-swe shards verify" in status["message"]


def test_missing_or_resized_shards_are_refused_before_training(tiny_06b, tmp_path, fresh_accelerate_state):
    from qwen_swe.train.trainer import Trainer

    shards = synthetic_shards(tmp_path / "shards", shards=3, per_shard=4)
    recorded = json.loads((shards / "index.json").read_text())["splits"]["train"][2]["bytes"]
    (shards / "train" / "train-000001.tar").unlink()
    with open(shards / "train" / "train-000002.tar", "ab") as tar:
        tar.write(b"\0" * 512)
    config = load_config(None, "smoke", [f"model.path={tiny_06b}", f"data.shards={shards}",
                                         f"run.output_dir={tmp_path / 'run'}", "run.tensorboard=false"])
    with pytest.raises(ValueError, match=r"2 of 3 shard\(s\) of split 'train' cannot be read as recorded") as error:
        Trainer(config)
    assert "train-000001.tar: missing" in str(error.value)
    assert f"train-000002.tar: {recorded + 512} bytes, index.json records {recorded}" in str(error.value)


def test_samples_longer_than_the_frame_budget_are_named_at_start(tiny_06b, tmp_path, capsys, fresh_accelerate_state):
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=4, with_reference=False)
    entries = json.loads((shards / "train" / "train-000000.entries.json").read_text())
    longest = max(entries, key=lambda entry: entry["frames"])
    budget = sorted(entry["frames"] for entry in entries)[1]  # the two longest are over it
    assert run(tiny_06b, shards, tmp_path / "run", f"data.frame_budget={budget}", "run.max_steps=1") == 0
    said = capsys.readouterr().out
    assert (f"2 training sample(s) are longer than data.frame_budget={budget} frames (longest: {longest['key']} in "
            f"train-000000.tar, {longest['frames']} frames)") in said, said
    assert f"Raise data.frame_budget to {longest['frames']}" in said
