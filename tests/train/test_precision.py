"""train/precision.py: one decision for weight dtype, autocast, kernels and what a DeepSpeed config means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_swe.train.config import ConfigError
from qwen_swe.train.precision import (FP32, PRECISIONS, mixed_precision_for_accelerator,
                                     resolve_attn_implementation, resolve_precision)

REPO = Path(__file__).resolve().parents[2]


def test_plain_settings_mean_what_train_precision_says():
    assert [resolve_precision(p).mode for p in PRECISIONS] == list(PRECISIONS)
    mixed, pure = resolve_precision("bf16-mixed"), resolve_precision("bf16-pure")
    assert (FP32.weights, FP32.autocast, FP32.accelerate_mixed_precision, FP32.uses_bf16) == ("fp32", None, "no", False)
    assert (mixed.weights, mixed.autocast, mixed.accelerate_mixed_precision) == ("fp32", "bf16", "bf16")
    assert (pure.weights, pure.autocast, pure.casts_weights, pure.label) == ("bf16", None, True, "bf16-pure")
    with pytest.raises(ConfigError, match="fp16 is not supported"):
        resolve_precision("fp16")


@pytest.mark.parametrize("config_name, expected_mode", [("zero2.json", "bf16-mixed"), ("zero3_offload.json", "bf16-mixed")])
def test_a_deepspeed_bf16_config_is_one_thing_everywhere(config_name, expected_mode):
    """bf16 weights in the step, fp32 master weights: bf16-mixed to the planner and the kernels, never autocast."""
    ds = json.loads((REPO / "ds_configs" / config_name).read_text())
    assert ds["bf16"]["enabled"]
    precision = resolve_precision("fp32", ds)
    assert precision.mode == expected_mode and precision.deepspeed
    assert (precision.weights, precision.autocast, precision.accelerate_mixed_precision) == ("bf16", None, None)
    assert precision.label == "deepspeed-bf16 (fp32 master weights)" and not precision.casts_weights
    assert resolve_precision("bf16-mixed", ds) == precision  # train.precision does not matter under DeepSpeed
    fp32 = resolve_precision("bf16-mixed", {**ds, "bf16": {"enabled": False}})
    assert (fp32.mode, fp32.weights, fp32.label) == ("fp32", "fp32", "deepspeed-fp32 (fp32 master weights)")
    with pytest.raises(ConfigError, match="bf16-pure casts the weights itself"):
        resolve_precision("bf16-pure", ds)


def test_the_accelerator_is_told_before_deepspeed_exists(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert mixed_precision_for_accelerator("bf16-mixed") == "bf16"
    assert mixed_precision_for_accelerator("bf16-pure") == "no"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert mixed_precision_for_accelerator("bf16-mixed") is None


def test_preflight_and_trainer_agree_on_a_deepspeed_config():
    """The planner's settings come from the same decision the trainer's manifest records."""
    import sys

    sys.path.insert(0, str(REPO / "launch"))
    try:
        import preflight
    finally:
        sys.path.remove(str(REPO / "launch"))
    from qwen_swe.train.config import load_config

    ds = json.loads((REPO / "ds_configs" / "zero2.json").read_text())
    run = load_config(None, None, ["model.path=/m", "data.shards=/d", "run.output_dir=/r"])
    found = preflight.Findings()
    precision = preflight.run_precision(run, ds, found)
    assert precision == resolve_precision(run.train.precision, ds) and not found.errors


def test_attention_resolution():
    assert resolve_attn_implementation("auto", "cpu") == ("sdpa", None)
    assert resolve_attn_implementation("eager", "cpu") == ("eager", None)
    impl, warning = resolve_attn_implementation("flash_attention_2", "cpu")
    assert impl == "sdpa" and "needs a GPU" in warning
    assert resolve_attn_implementation("auto", "cuda", precision="fp32") == ("sdpa", None)


def test_a_bf16_strategy_on_a_device_where_bf16_is_slow_is_warned_about(monkeypatch, tiny_06b, tmp_path, capsys,
                                                                          fresh_accelerate_state):
    """On CPUs without native bf16 (AVX2 only) a bf16 matmul takes tens of times longer than fp32: say so."""
    from qwen_swe.data.synthetic import synthetic_shards
    from qwen_swe.train import precision
    from qwen_swe.train.config import load_config
    from qwen_swe.train.trainer import Trainer

    assert precision.bf16_slowdown("cpu") > 0  # the real probe runs here (a few milliseconds)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda device_type: 40.0)
    warning = precision.slow_bf16_warning(resolve_precision("bf16-mixed", None), "cpu")
    assert "bf16 matmuls run 40x slower than fp32" in warning and "train.precision=fp32" in warning
    assert precision.slow_bf16_warning(FP32, "cpu") is None
    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=4, eval_samples=0)
    config = load_config(None, "smoke", [f"model.path={tiny_06b}", f"data.shards={shards}",
                                         f"run.output_dir={tmp_path / 'run'}", "train.precision=bf16-mixed",
                                         "run.eval_every=0", "run.tensorboard=false"])
    Trainer(config).lock.release()
    assert "warning: train.precision bf16-mixed: bf16 matmuls run 40x slower" in capsys.readouterr().out
    monkeypatch.setattr(precision, "bf16_slowdown", lambda device_type: 0.5)
    assert precision.slow_bf16_warning(resolve_precision("bf16-mixed", None), "cpu") is None
