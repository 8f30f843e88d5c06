"""The search space file: ranges become trial run configs; every mistake is named with its field."""

from __future__ import annotations

import pytest

from qwen_swe.train.config import ConfigError

from ..train.configs import config_with


def test_a_space_makes_trial_configs_and_a_constant_batch(tmp_path):
    from qwen_swe.tune.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text("optim.lr: {low: 1.0e-6, high: 1.0e-3, log: true}\n"
                    "schedule.warmup_steps: {low: 0, high: 50, step: 10}\n"
                    "train.lora.r: {choices: [8, 16]}\n"
                    "optim.lr_multipliers.talker\\.text_projection: {low: 1, high: 10}\n"
                    "data.frame_budget: {choices: [256, 512], constant_batch: 1024}\n")
    space = load_space(path)
    assert [(p.name, p.kind) for p in space.params] == [
        ("optim.lr", "float"), ("schedule.warmup_steps", "int"), ("train.lora.r", "choice"),
        ("optim.lr_multipliers.talker\\.text_projection", "float"), ("data.frame_budget", "choice")]
    base = config_with("schedule.total_steps=100", "schedule.warmup_steps=10")
    space.check(base)
    values = {"optim.lr": 3e-4, "schedule.warmup_steps": 20, "train.lora.r": 8,
              "optim.lr_multipliers.talker\\.text_projection": 2.5, "data.frame_budget": 256}
    config = space.trial_config(base, values, tmp_path / "trial-0003")
    assert (config.optim.lr, config.schedule.warmup_steps, config.train.lora.r) == (3e-4, 20, 8)
    assert config.optim.lr_multipliers == {"talker\\.text_projection": 2.5}
    assert (config.data.frame_budget, config.optim.accumulation) == (256, 4)  # 1024 frames per step either way
    assert config.run.output_dir == str(tmp_path / "trial-0003")
    assert base.run.output_dir == "/runs/test"  # the base config is not touched


def test_space_mistakes_are_named():
    from qwen_swe.tune.space import parse_space

    with pytest.raises(ConfigError) as caught:
        parse_space({"optim.lrr": {"low": 1e-5, "high": 1e-3},
                     "optim.weight_decay": {"low": 0.1, "high": 0.0},
                     "optim.eps": {"low": 0, "high": 1, "log": True},
                     "train.freeze": {"choices": [["a"], ["b"]]},
                     "run.output_dir": {"choices": ["a", "b"]},
                     "data.frame_budget": {"choices": [300, 512], "constant_batch": 1024},
                     "schedule.warmup_steps": {"lo": 0, "high": 10}})
    message = str(caught.value)
    for expected in ("optim.lrr: not a run-config field (did you mean 'optim.lr'?)",
                     "optim.weight_decay: low must be below high", "optim.eps: a log range needs low > 0",
                     "train.freeze: choices must be numbers, strings or booleans", "run.output_dir: not searchable",
                     "data.frame_budget: every choice must divide constant_batch=1024",
                     "schedule.warmup_steps: unknown key(s) lo"):
        assert expected in message, message


def test_a_bound_that_makes_an_invalid_run_config_is_refused_before_the_study():
    from qwen_swe.tune.space import parse_space

    space = parse_space({"schedule.warmup_steps": {"low": 0, "high": 200}})
    with pytest.raises(ConfigError, match=r"schedule.warmup_steps=200: schedule.warmup_steps: must be < "
                                          r"schedule.total_steps \(100\)"):
        space.check(config_with("schedule.total_steps=100", "schedule.warmup_steps=10"))
