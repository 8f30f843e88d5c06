"""Shared by the train/ tests: a run config from the required fields plus overrides, and the tiny model loaded."""

from __future__ import annotations

from pathlib import Path

from qwen_swe.train.config import RunConfig, load_config

REQUIRED = ["model.path=/models/tiny", "data.shards=/data/shards", "run.output_dir=/runs/test"]


def config_with(*overrides: str, preset: str | None = None) -> RunConfig:
    return load_config(None, preset, REQUIRED + list(overrides))


def load_tiny(model_dir: Path):
    from qwen_swe.modeling import load_model

    return load_model(model_dir)
