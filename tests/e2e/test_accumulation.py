"""Accumulation and data parallelism give the step's true gradient and cannot drift.

- Exact weighting: two samples of different lengths trained for one step as one batch, as two accumulated
  micro-batches (one process), and as one micro-batch on each of two ranks (DDP, DeepSpeed ZeRO-2) give the same
  update. The optimizer is made linear in the gradient (AdamW's first step with an epsilon far above any gradient:
  update = lr * g / (|g| + eps), with lr = eps), so equal updates mean equal gradients (to 1e-6 of each tensor's
  largest update: fp32 sums taken in another order differ in their last bits).
- No drift: DDP and ZeRO-2 with accumulation 2 and a micro-batch that no rank can use in the middle of a step still
  step the optimizer at every trainer step (DeepSpeed's own step counter agrees), and stopping and resuming in the
  middle of the run continues exactly. (One process: tests/train/test_step.py.)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.checkpoint import trained_state_dict

from ..helpers import empty_micro_batch_in_the_middle_for
from ..launching import ROOT, launch, losses
from ..train.conftest import fresh_accelerate_state_reset

LINEAR_ADAMW = ["optim.lr=1e8", "optim.eps=1e8", "optim.weight_decay=0", "optim.grad_clip=0",
                "optim.betas=[0.9,0.95]", "schedule.name=constant", "schedule.warmup_steps=0"]


def overrides(model: Path, shards: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}",
            "data.layouts={streaming: 1}", "data.num_workers=0", "data.frame_budget=100000", "run.eval_every=0",
            "run.tensorboard=false", "run.activation_stats_every=0", "train.freeze=[text_embedding]", *extra]


def launched(accelerate_config: str, args: list[str]) -> None:
    command = [sys.executable, "-m", "qwen_swe", "launch", "--config_file",
               str(ROOT / "accelerate_configs" / accelerate_config), "-m", "qwen_swe", "train", *args]
    result = launch(command)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]


def in_process(args: list[str]) -> None:
    from qwen_swe.train.config import load_config
    from qwen_swe.train.trainer import Trainer

    fresh_accelerate_state_reset()
    config = load_config(None, args[1], args[2:])
    try:
        assert Trainer(config).run() == 0
    finally:
        fresh_accelerate_state_reset()


def weights_after(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return trained_state_dict(run_dir / "checkpoints" / f"step-{step:08d}")


def test_one_batch_accumulation_and_two_ranks_give_the_same_update(tiny_06b, tmp_path):
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=2, eval_samples=0, with_reference=False)
    entries = json.loads((shards / "train" / "train-000000.entries.json").read_text())
    assert len({entry["frames"] for entry in entries}) == 2  # different lengths: the case weighting decides
    one_step = [*LINEAR_ADAMW, "run.max_steps=1", "schedule.total_steps=1", "run.checkpoint_every=1"]
    runs = {
        "one batch": (None, ["data.max_samples=2", "optim.accumulation=1"]),
        "accumulated": (None, ["data.max_samples=1", "optim.accumulation=2"]),
        "DDP": ("cpu_ddp.yaml", ["data.max_samples=1", "optim.accumulation=1"]),
        "ZeRO-2": ("cpu_zero2.yaml", ["data.max_samples=1", "optim.accumulation=1"]),
    }
    weights = {}
    for name, (accelerate_config, settings) in runs.items():
        args = overrides(tiny_06b, shards, tmp_path / name.replace(" ", "-"), *one_step, *settings)
        if accelerate_config is None:
            in_process(args)
        else:
            launched(accelerate_config, args)
        weights[name] = weights_after(tmp_path / name.replace(" ", "-"), 1)
        samples = json.loads((tmp_path / name.replace(" ", "-") / "metrics.jsonl").read_text())["samples"]
        assert samples == 2, (name, samples)
    reference = weights.pop("one batch")
    start = trained_state_dict_of_model(tiny_06b, reference.keys())
    trained = [key for key in reference if not torch.equal(reference[key], start[key])]
    assert "model.talker.codec_head.weight" in trained and any("code_predictor" in key for key in trained)
    for name, theirs in weights.items():
        for key in trained:
            # fp32 sums taken in another order differ in their last bits: 1e-6 of the tensor's largest update, plus
            # the rounding of fp32 weights themselves (2 units in the last place)
            update, their_update = reference[key] - start[key], theirs[key] - start[key]
            worst = float((their_update - update).abs().max())
            allowed = 1e-6 * float(update.abs().max()) + 2 * torch.finfo(torch.float32).eps * float(
                reference[key].abs().max())
            assert worst <= allowed, (name, key, worst, allowed)


def trained_state_dict_of_model(model_dir: Path, keys) -> dict[str, torch.Tensor]:
    """The untrained weights under the names checkpoints use (`model.` + the model's own names)."""
    from safetensors.torch import load_file

    state = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        state.update({f"model.{name}": tensor.float() for name, tensor in load_file(str(file)).items()})
    return {key: state[key] for key in keys if key in state}


def deepspeed_global_steps(checkpoint: Path) -> int:
    states = torch.load(checkpoint / "pytorch_model" / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=False)
    return int(states["global_steps"])


@pytest.mark.parametrize("accelerate_config", ["cpu_ddp.yaml", "cpu_zero2.yaml"])
def test_accumulation_passes_over_an_empty_micro_batch_without_drifting_and_resumes_exactly(accelerate_config,
                                                                                             tiny_06b, tmp_path):
    # 16 samples: the 4 steps of 2 ranks x 2 micro-batches of one sample read each once
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=16, eval_samples=0, with_reference=False)
    damaged = empty_micro_batch_in_the_middle_for(shards, rank=0, world=2)
    steps = ["schedule.total_steps=4", "optim.accumulation=2", "data.max_samples=1", "run.checkpoint_every=2",
             "optim.lr=1e-3", "schedule.warmup_steps=0"]
    whole = tmp_path / "whole"
    launched(accelerate_config, overrides(tiny_06b, shards, whole, *steps, "run.max_steps=4"))
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["finite"] and not r["data_skipped"] for r in records), records
    assert records[1]["bad_samples"] == 1 and records[1]["samples"] == 2  # 4 micro-batches, one passed over by all
    listed = [json.loads(line) for line in (whole / "bad_samples" / "rank0.jsonl").read_text().splitlines()]
    assert [bad["key"] for bad in listed] == [damaged]
    if "zero" in accelerate_config:  # DeepSpeed stepped its optimizer at every trainer step, as its counter says
        assert deepspeed_global_steps(whole / "checkpoints" / "step-00000002") == 2
        assert deepspeed_global_steps(whole / "checkpoints" / "step-00000004") == 4

    # accelerate's own micro-step counter is not part of a checkpoint: had it drifted, a run resumed in a new process
    # from the middle checkpoint would differ (the whole run's folder as it stood at step 2: its later checkpoint gone)
    split = tmp_path / "split"
    shutil.copytree(whole, split)
    shutil.rmtree(split / "checkpoints" / "step-00000004")
    (split / "checkpoints" / "latest").write_text("step-00000002\n")
    launched(accelerate_config, overrides(tiny_06b, shards, split, *steps, "run.max_steps=4") + ["--resume", "auto"])
    ours, theirs = losses(split), losses(whole)
    assert sorted(ours) == [1, 2, 3, 4]
    for step in ours:
        assert ours[step] == pytest.approx(theirs[step], rel=1e-6, abs=1e-7), (step, ours[step], theirs[step])
